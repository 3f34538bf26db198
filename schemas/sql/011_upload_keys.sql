-- The names retried uploads are known by: the client's Idempotency-Key (`key:<key>`) or,
-- without one, the content's SHA-256 and the client's address (`content:<ip>:<sha256>`).
-- The first request with a name claims it before anything is published; a retry finds
-- the claim and answers the first request's upload or job (`id`). Read the oldest claim
-- within the window: a claim is never replaced.
CREATE TABLE IF NOT EXISTS {database}.upload_keys
(
    route       String,
    name        String,
    id          String,
    sha256      String,
    created_at  DateTime('UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (route, name, created_at)
