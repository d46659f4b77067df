def test_db(airflow_db):
    assert (airflow_db / "airflow.db").exists()
