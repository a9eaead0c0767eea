-- The derenroll team store, schema 1: created by `derenroll store init` (or the
-- first use of a store URL), inside one transaction. The database never holds
-- a secret: `secret` columns are sealed on the client (AES-256-GCM) under the
-- team key, and each member's copy of that key is wrapped for the member.

CREATE TABLE derenroll_schema (
	version integer NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO derenroll_schema (version) VALUES (1);

-- One row. Its row lock is the store's write lock; rev counts the writes.
CREATE TABLE store_state (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	rev bigint NOT NULL DEFAULT 0,
	key_generation integer NOT NULL DEFAULT 0
);
INSERT INTO store_state DEFAULT VALUES;

CREATE TABLE members (
	name text PRIMARY KEY,
	public_key bytea NOT NULL,    -- X25519
	private_key bytea,            -- sealed under the member's passphrase (scrypt)
	kdf text,                     -- scrypt:LOG2N:R:P
	salt bytea,
	team_key bytea NOT NULL,      -- the team key, wrapped for public_key
	key_generation integer NOT NULL,
	added_by text NOT NULL DEFAULT current_user,
	added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE records (
	id text PRIMARY KEY,
	seq bigserial NOT NULL,       -- insertion order
	customer text NOT NULL,
	vendor text NOT NULL,
	method text NOT NULL,
	account text,
	region text,
	site_ids text[] NOT NULL,
	created_at bigint NOT NULL,
	updated_at bigint NOT NULL,
	access_expires_at bigint NOT NULL DEFAULT 0,
	refresh_expires_at bigint NOT NULL DEFAULT 0,
	last_check_at bigint NOT NULL DEFAULT 0,
	last_check_outcome text,
	refreshable boolean NOT NULL DEFAULT false,  -- holds a refresh token
	public jsonb NOT NULL,        -- the record without its credentials
	secret bytea,                 -- its credentials, sealed under the team key
	key_generation integer NOT NULL,
	rev bigint NOT NULL,
	created_by text NOT NULL DEFAULT current_user
);
CREATE INDEX records_rev ON records (rev);
CREATE INDEX records_seq ON records (seq);
CREATE INDEX records_customer ON records (lower(customer));
CREATE INDEX records_vendor ON records (vendor, method);
CREATE INDEX records_access_expires ON records (access_expires_at) WHERE access_expires_at > 0;
CREATE INDEX records_refresh_expires ON records (refresh_expires_at) WHERE refresh_expires_at > 0;
CREATE INDEX records_sites ON records USING gin (site_ids);
CREATE INDEX records_created_by ON records (created_by);

-- What was removed, by revision: readers catch up from where they were.
CREATE TABLE removed (
	id text NOT NULL,
	rev bigint NOT NULL
);
CREATE INDEX removed_rev ON removed (rev);

-- A record's lock: its row here, held FOR UPDATE across a vendor call.
CREATE TABLE record_locks (
	id text PRIMARY KEY
);

CREATE TABLE app_secrets (
	name text PRIMARY KEY,
	secret bytea NOT NULL,
	key_generation integer NOT NULL
);

-- Who did what: appended to, never changed; never a secret.
CREATE TABLE audit (
	seq bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	member text,
	db_user text NOT NULL DEFAULT current_user,
	action text NOT NULL,
	record text,
	result text NOT NULL
);
CREATE INDEX audit_record ON audit (record, seq);

-- The vendors' per-app rate limits, shared by every machine: a token bucket
-- per limit (vendors.json), taken from atomically on the database's clock.
CREATE TABLE rate_limits (
	name text PRIMARY KEY,
	tokens double precision NOT NULL,
	updated_ms double precision NOT NULL,
	granted boolean NOT NULL          -- whether the last take took
);
