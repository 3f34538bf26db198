"""Read a creative-packs version with readers that are not shardflow's and compare them.

usage: read_creative_packs.py DATASET.tfrecord DATASET.parquet

The TFRecord file is read by the `tfrecords` package (TensorFlow's C++ record reader,
which checks the length and data CRC32C of every record); each record is parsed as a
`tf.train.Example` by `protobuf` from a descriptor declared below as TensorFlow's
example.proto and feature.proto declare it; the Parquet file is read by pyarrow. Every
Example must hold exactly the three features of its Parquet row. Prints one line and
exits 0 when they all match, else 1.
"""

import sys

import pyarrow.parquet as pq
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def example_class():
    proto = descriptor_pb2.FileDescriptorProto(name="tf_example.proto", package="tensorflow", syntax="proto3")

    def message(name, fields, nested=None, oneof=None):
        m = proto.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name, in_oneof in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if in_oneof:
                f.oneof_index = 0
        if nested:
            entry = m.nested_type.add(name=nested[0])
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=nested[1])

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, F.TYPE_BYTES, rep, None, False)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None, False)])
    message("Int64List", [("value", 1, F.TYPE_INT64, rep, None, False)])
    message(
        "Feature",
        [
            ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", True),
            ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", True),
            ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", True),
        ],
        oneof="kind",
    )
    message(
        "Features",
        [("feature", 1, F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", False)],
        nested=("FeatureEntry", ".tensorflow.Feature"),
    )
    message("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def fail(message):
    print(message)
    sys.exit(1)


def main(tfrecord_path, parquet_path):
    table = pq.read_table(parquet_path)
    types = {f.name: str(f.type) for f in table.schema}
    if types != {"target_store_id": "string", "creative_pack_id": "string", "label": "int64"}:
        fail(f"parquet columns {types}")
    if any(table.column(name).null_count for name in types):
        fail("parquet has nulls")
    stores = table.column("target_store_id").to_pylist()
    packs = table.column("creative_pack_id").to_pylist()
    labels = table.column("label").to_pylist()

    # tfrecords ships an Arrow library of its own, which registers the "file" scheme
    # again: imported first, pyarrow can no longer open a local file.
    import tfrecords

    Example = example_class()
    options = tfrecords.TFRecordOptions(compression_type=tfrecords.TFRecordCompressionType.NONE)
    n = 0
    for record in tfrecords.tf_record_iterator(tfrecord_path, options=options):
        if n >= len(labels):
            fail(f"more TFRecord records than the {len(labels)} parquet rows")
        example = Example.FromString(record)
        feature = example.features.feature
        if sorted(feature.keys()) != ["creative_pack_id", "label", "target_store_id"]:
            fail(f"record {n}: features {sorted(feature.keys())}")
        got = (
            list(feature["target_store_id"].bytes_list.value),
            list(feature["creative_pack_id"].bytes_list.value),
            list(feature["label"].int64_list.value),
        )
        want = ([stores[n].encode()], [packs[n].encode()], [labels[n]])
        if got != want:
            fail(f"record {n}: {got} but the parquet row is {want}")
        n += 1
    if n != len(labels):
        fail(f"{n} TFRecord records for {len(labels)} parquet rows")
    print(f"{n} records match the parquet rows")


if __name__ == "__main__":
    main(*sys.argv[1:])
