-- 007: a retried request_id is told duplicate or conflict by comparing the stored usage itself
-- (only for the rows the ledger did not take), so the per-row content digest is no longer kept:
-- 8 bytes less per record, and no Python hashing on the ingest path.
ALTER TABLE ledger DROP COLUMN fingerprint;
