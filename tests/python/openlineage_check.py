"""Check OpenLineage run events against the openlineage-python client's classes.

The client's classes are generated from the OpenLineage JSON schema (spec 2-0-2 and the
facets' own schemas) and carry its validators: a UUID runId, an ISO 8601 eventTime with a
time, URLs for producer and schemaURL, required fields present, no unknown fields in the
standard facets. Each event (a JSON array on stdin) is built into those classes, which
raises on anything the schema refuses; then serialized back by the client's Serde, which
must give the event we sent, and every standard facet must name the schema the client
was generated from. Prints `ok <n>` or the first event that fails, with the reason, and
exits 1.
"""

import json
import sys

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.generated.base import RunFacet
from openlineage.client.serde import Serde

FACET_KEYS = {"_producer", "_schemaURL"}


def without_base(d):
    return {k: v for k, v in d.items() if k not in FACET_KEYS}


def checked(facet, sent, cls):
    """`facet` built from `sent` must name the schema `cls` was generated from."""
    assert sent["_schemaURL"] == cls._get_schema(), f"{cls.__name__}: _schemaURL {sent['_schemaURL']}, schema is {cls._get_schema()}"
    return facet


def run_facets(facets):
    out = {}
    for name, f in facets.items():
        body = without_base(f)
        if name == "parent":
            out[name] = checked(
                parent_run.ParentRunFacet(
                    run=parent_run.Run(**body["run"]),
                    job=parent_run.Job(**body["job"]),
                    producer=f["_producer"],
                ),
                f,
                parent_run.ParentRunFacet,
            )
        elif name == "processing_engine":
            out[name] = checked(processing_engine_run.ProcessingEngineRunFacet(**body, producer=f["_producer"]), f, processing_engine_run.ProcessingEngineRunFacet)
        elif name == "errorMessage":
            out[name] = checked(error_message_run.ErrorMessageRunFacet(**body, producer=f["_producer"]), f, error_message_run.ErrorMessageRunFacet)
        else:
            # A custom facet: a RunFacet with its own fields (the spec's additionalProperties).
            custom = RunFacet(producer=f["_producer"]).with_additional_properties(**body)
            custom._schemaURL = f["_schemaURL"]
            out[name] = custom
    return out


def dataset(d, cls):
    facets = {}
    for name, f in d.get("facets", {}).items():
        assert name == "schema", f"unexpected dataset facet {name}"
        fields = [schema_dataset.SchemaDatasetFacetFields(**field) for field in f["fields"]]
        facets[name] = checked(schema_dataset.SchemaDatasetFacet(fields=fields, producer=f["_producer"]), f, schema_dataset.SchemaDatasetFacet)
    kwargs = {"namespace": d["namespace"], "name": d["name"], "facets": facets}
    if cls is OutputDataset and "outputFacets" in d:
        stats = d["outputFacets"]["outputStatistics"]
        kwargs["outputFacets"] = {
            "outputStatistics": checked(
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(**without_base(stats), producer=stats["_producer"]),
                stats,
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
            )
        }
    return cls(**kwargs)


def event(e):
    job_type = e["job"]["facets"]["jobType"]
    job = Job(
        namespace=e["job"]["namespace"],
        name=e["job"]["name"],
        facets={"jobType": checked(job_type_job.JobTypeJobFacet(**without_base(job_type), producer=job_type["_producer"]), job_type, job_type_job.JobTypeJobFacet)},
    )
    built = RunEvent(
        eventType=RunState[e["eventType"]],
        eventTime=e["eventTime"],
        run=Run(runId=e["run"]["runId"], facets=run_facets(e["run"]["facets"])),
        job=job,
        inputs=[dataset(d, InputDataset) for d in e["inputs"]],
        outputs=[dataset(d, OutputDataset) for d in e["outputs"]],
        producer=e["producer"],
    )
    assert e["schemaURL"] == RunEvent._get_schema(), f"schemaURL {e['schemaURL']}"
    return built


def canonical(value):
    """The event as the client writes it: no empty lists or objects."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def main():
    events = json.load(sys.stdin)
    for i, e in enumerate(events):
        try:
            back = Serde.to_dict(event(e))
            if canonical(back) != canonical(e):
                raise AssertionError(f"the client serializes it otherwise:\n{json.dumps(back, sort_keys=True)}")
        except Exception as error:  # noqa: BLE001 - reported, then exit 1
            print(f"event {i} fails: {type(error).__name__}: {error}\n{json.dumps(e, sort_keys=True)}")
            sys.exit(1)
    print(f"ok {len(events)}")


if __name__ == "__main__":
    main()
