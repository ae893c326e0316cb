-- Airlock hub store, schema version 3: members' approvals of collaboration
-- versions.
--
-- A node installs a version that configures its member's datasets only
-- with that member's signature over the version's exact text (its SHA-256);
-- the hub keeps each decision to relay it and to show who is waited for.
-- A decision is on one version (its number and text): an approval of a text
-- is never reused for a later version with the same text. `signature` is
-- empty for a refusal.
CREATE TABLE collaboration_approvals (
    collab TEXT NOT NULL REFERENCES collaborations (name),
    sha256 TEXT NOT NULL,
    member TEXT NOT NULL,
    version BIGINT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'refused')),
    signature TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (collab, version, member)
);
