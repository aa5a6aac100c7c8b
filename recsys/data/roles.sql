-- Least privilege in the event store's database: run by its owner (`recsys store init`) once the
-- tables exist. {serving}: the API (reads histories, the alias log and API keys; writes events
-- and impressions; no DDL, no update, no delete). {pipeline}: the Airflow workers (read and write
-- every table, no DDL: the owner migrates). Neither may connect to the other databases.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{serving}') THEN
    CREATE ROLE {serving} LOGIN PASSWORD '{serving_password}';
  ELSE
    ALTER ROLE {serving} LOGIN PASSWORD '{serving_password}';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{pipeline}') THEN
    CREATE ROLE {pipeline} LOGIN PASSWORD '{pipeline_password}';
  ELSE
    ALTER ROLE {pipeline} LOGIN PASSWORD '{pipeline_password}';
  END IF;
END $$;
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT ON DATABASE {database} TO {serving}, {pipeline};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {serving}, {pipeline};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {serving}, {pipeline};
GRANT SELECT, INSERT ON events TO {serving};
GRANT INSERT ON impressions TO {serving};
GRANT SELECT (request_id) ON impressions TO {serving};  -- ON CONFLICT (request_id) reads its key
GRANT SELECT ON alias_moves, alias_heads, api_keys TO {serving};
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {pipeline};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {pipeline};
