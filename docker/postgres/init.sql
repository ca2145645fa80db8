-- Second database of the stack: `recsys`, where jobs/publish.py writes the table
-- `recommendations` and the view `recommendations_latest` (RECSYS_SQL_URL in compose.yaml).
-- The Airflow metadata database `airflow` is created by the image from POSTGRES_DB.
--
-- Run once by the postgres image (docker-entrypoint-initdb.d), when its data volume is
-- first initialised, as the superuser. The password of the owner role comes from the
-- container's environment (RECSYS_DB_PASSWORD, a development default in compose.yaml),
-- never from this file; an unset variable stops the init with an error.
\set ON_ERROR_STOP on
\getenv recsys_password RECSYS_DB_PASSWORD

CREATE ROLE recsys LOGIN PASSWORD :'recsys_password';
CREATE DATABASE recsys OWNER recsys;
REVOKE ALL ON DATABASE recsys FROM PUBLIC;
