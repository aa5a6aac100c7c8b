-- Run once by the postgres image, on an empty data volume (docker-entrypoint-initdb.d), as
-- POSTGRES_USER, who owns the four databases. One server, one database per store:
--   airflow      Airflow metadata DB and the Celery result backend (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)
--   mlflow       MLflow backend store: runs, metrics, registered models (MLFLOW_BACKEND_STORE_URI)
--   mlflow_auth  MLflow basic-auth users and permissions (MLFLOW_AUTH_DATABASE_URI)
--   events       the recsys event store, impressions and alias moves (RECSYS_EVENT_STORE_URL)
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE events;
