-- Who may do what in a derenroll team store, enforced by PostgreSQL (row-level
-- security), not by the client. Run once by the database's owner, after
-- `derenroll store init` created the tables:
--
--   psql "postgresql://owner@db/derenroll" -f /usr/share/derenroll/sql/roles.sql
--
-- then give each person a login role in one of the three groups:
--
--   CREATE ROLE ivan LOGIN IN ROLE derenroll_installer;   -- a field installer
--   CREATE ROLE sue LOGIN IN ROLE derenroll_support;      -- support staff
--   CREATE ROLE backend LOGIN IN ROLE derenroll_backend;  -- the company's backend
--
-- and make each a member of the team (`derenroll team add NAME`, by support),
-- NAME being their database role. Installers add records and see and update
-- their own; support sees, refreshes, re-authorizes and removes every record
-- and manages the team; the backend reads every record (it opens the
-- credentials with its own member passphrase). Nobody but the owner changes
-- or deletes the audit log, and no one writes an entry in another login's name.
-- Safe to run again.

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'derenroll_installer') THEN
		CREATE ROLE derenroll_installer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'derenroll_support') THEN
		CREATE ROLE derenroll_support NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'derenroll_backend') THEN
		CREATE ROLE derenroll_backend NOLOGIN;
	END IF;
END
$$;

GRANT SELECT ON derenroll_schema TO derenroll_installer, derenroll_support, derenroll_backend;
-- Every writer bumps the revision under the store's write lock.
GRANT SELECT, UPDATE ON store_state TO derenroll_installer, derenroll_support;
GRANT SELECT ON store_state TO derenroll_backend;
GRANT SELECT, INSERT ON record_locks TO derenroll_installer, derenroll_support;
GRANT UPDATE ON record_locks TO derenroll_installer, derenroll_support; -- FOR UPDATE
GRANT SELECT ON removed TO derenroll_installer, derenroll_support, derenroll_backend;
GRANT INSERT ON removed TO derenroll_support;
GRANT SELECT, INSERT, UPDATE, DELETE ON app_secrets TO derenroll_support;
GRANT SELECT ON app_secrets TO derenroll_installer, derenroll_backend;
GRANT SELECT, INSERT, UPDATE ON rate_limits TO derenroll_installer, derenroll_support,
	derenroll_backend;
GRANT INSERT, SELECT ON audit TO derenroll_installer, derenroll_support, derenroll_backend;
-- Each entry names the login that wrote it (db_user), whatever member name the client
-- gives: `derenroll log` shows both when they differ. Installers read their own entries.
ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_login ON audit;
CREATE POLICY own_login ON audit FOR INSERT
	TO derenroll_installer, derenroll_support, derenroll_backend
	WITH CHECK (db_user = current_user);
DROP POLICY IF EXISTS read_all ON audit;
CREATE POLICY read_all ON audit FOR SELECT TO derenroll_support, derenroll_backend USING (true);
DROP POLICY IF EXISTS read_own ON audit;
CREATE POLICY read_own ON audit FOR SELECT TO derenroll_installer
	USING (db_user = current_user);
GRANT USAGE ON SEQUENCE audit_seq_seq, records_seq_seq TO derenroll_installer,
	derenroll_support, derenroll_backend;

GRANT SELECT, INSERT, UPDATE ON records TO derenroll_installer;
GRANT SELECT, INSERT, UPDATE, DELETE ON records TO derenroll_support;
GRANT SELECT ON records TO derenroll_backend;
ALTER TABLE records ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS support_all ON records;
CREATE POLICY support_all ON records TO derenroll_support USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS installer_own ON records;
CREATE POLICY installer_own ON records TO derenroll_installer
	USING (created_by = current_user) WITH CHECK (created_by = current_user);
DROP POLICY IF EXISTS backend_read ON records;
CREATE POLICY backend_read ON records FOR SELECT TO derenroll_backend USING (true);

-- Members: support manages the team; everyone reads the public keys and their own row.
GRANT SELECT ON members TO derenroll_installer, derenroll_backend;
GRANT SELECT, INSERT, UPDATE, DELETE ON members TO derenroll_support;
ALTER TABLE members ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS support_all ON members;
CREATE POLICY support_all ON members TO derenroll_support USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS own_row ON members;
CREATE POLICY own_row ON members FOR SELECT TO derenroll_installer, derenroll_backend
	USING (name = current_user);
