-- Fitted models, registered by `producer fit`. model_json is the whole model.json, so a
-- worker can load a model by id without sharing the model directory.
CREATE TABLE IF NOT EXISTS {database}.models
(
    model_id       String,
    dataset        String,
    format_version UInt32,
    created_at     DateTime,
    path           String,
    components     UInt32,
    model_json     String,
    metadata_json  String
)
ENGINE = ReplacingMergeTree
ORDER BY model_id
