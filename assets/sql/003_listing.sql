-- The derenroll team store, schema 3, for listings. A record's public part is kept as the
-- client wrote it (json, compact) rather than as jsonb. The client only ever
-- stores and reads it whole, and turning jsonb back into text was the
-- server's largest part of a listing (about 40 % of `list --due 7` at
-- 100,000 records); what is sorted and filtered by has columns of its own.

ALTER TABLE records ALTER COLUMN public TYPE json USING public::json;

-- The enrolled systems screen reads a page at a time, most urgent first
-- (never due last), the id breaking ties: keyset paging on this index.
CREATE INDEX records_page ON records ((coalesce(due_at, 9223372036854775807)), id);

INSERT INTO derenroll_schema (version) VALUES (3);
