-- Roles and databases of the production profile, one login per consumer; safe to run again.
-- The passwords arrive as psql variables (mlflow_password, feast_password, prefect_password),
-- set by loopback.sh or postgres/init.sh from the environment: none is written here.
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['mlflow', 'feast', 'prefect']) r
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE mlflow PASSWORD :'mlflow_password';
ALTER ROLE feast PASSWORD :'feast_password';
ALTER ROLE prefect PASSWORD :'prefect_password';
-- MLflow: tracking and registry (mlflow), users and permissions of the basic-auth app
-- (mlflow_auth); Feast: the SQL registry (feast); Prefect: its server's database (prefect).
SELECT format('CREATE DATABASE %I OWNER %I', d, o)
  FROM (VALUES ('mlflow', 'mlflow'), ('mlflow_auth', 'mlflow'), ('feast', 'feast'),
               ('prefect', 'prefect')) AS t(d, o)
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \gexec
