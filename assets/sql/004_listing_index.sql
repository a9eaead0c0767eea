-- The derenroll team store, schema 4: a listing (`derenroll list`, `list --due
-- N`) answered from one index. It reads, of each record, only what its table
-- and the client's due rule need (enr_store_options.columns_only); those
-- columns are carried in the index beside due_at, so that the server reads the
-- index alone (an index-only scan, for every page that VACUUM has marked all
-- visible) instead of one heap page for nearly every record that is due: at
-- 100,000 records, 11,669 of them due within 7 days were on 3,333 pages.
-- created_by is carried too: the installers' row-level policy reads it.
-- Every record is in it (due_at NULL too), for `list` of every record.
-- Schema 2's narrow records_due stays: for the reads that need the records'
-- public parts from the heap anyway (`list --json`, `status --due`), the
-- planner prefers a bitmap of it to a scan of this wider index.

CREATE INDEX records_listing ON records (due_at) INCLUDE (id, seq, customer, vendor, method,
	access_expires_at, refresh_expires_at, last_check_outcome, refreshable, created_by);

INSERT INTO derenroll_schema (version) VALUES (4);
