-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
-- the results warehouse of the example DAGs (connection gip_warehouse), beside Airflow's own
-- metadata database "airflow".
CREATE DATABASE warehouse;
