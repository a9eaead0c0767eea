-- The derenroll team store, schema 2: when each record needs a person, as a
-- column with an index, so that `list --due N` and `status --due N` are
-- answered from the index instead of a scan of every record. The rule is the
-- client's (what may be due, narrowed by it): a check that was not ok, or a
-- sign-in record that no refresh token renews, is due now (0); else the
-- refresh token's expiry, or the access token's where no refresh token
-- renews it; else never (NULL).

ALTER TABLE records ADD COLUMN due_at bigint GENERATED ALWAYS AS (
	CASE
		WHEN last_check_outcome IS NOT NULL AND last_check_outcome <> 'ok' THEN 0
		WHEN NOT refreshable AND method IN ('oauth', 'email', 'join') THEN 0
		WHEN refresh_expires_at > 0 AND access_expires_at > 0 AND NOT refreshable
			THEN least(refresh_expires_at, access_expires_at)
		WHEN refresh_expires_at > 0 THEN refresh_expires_at
		WHEN access_expires_at > 0 AND (NOT refreshable OR refresh_expires_at = 0)
			THEN access_expires_at
	END
) STORED;
CREATE INDEX records_due ON records (due_at) WHERE due_at IS NOT NULL;

INSERT INTO derenroll_schema (version) VALUES (2);
