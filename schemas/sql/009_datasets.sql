-- One logical row per dataset: its columns and the model it uses. A later row (higher
-- version) replaces an earlier one, as `producer model use` and `PUT /datasets/{name}/model`
-- do; the first fit of a dataset writes its first row.
CREATE TABLE IF NOT EXISTS {database}.datasets
(
    name         String,
    -- The Arrow schema of the dataset's columns (JSON), as the model reads them.
    columns_json String,
    -- The model the dataset's jobs use when a request names none.
    model_id     String,
    -- `first fit` (fitted from its own shards) or `use` (told so).
    model_source String,
    updated_at   DateTime,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name
