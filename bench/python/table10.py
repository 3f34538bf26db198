"""Write a 10-column table of every common kind (numbers, zero-inflated amounts, categories,
booleans, dates, timestamps) with about 2% nulls in each column, for bench/pipeline.sh.

    python bench/python/table10.py ROWS OUT.parquet
"""
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main(rows: int, out: str) -> None:
    u = [pc.random(rows, initializer=seed) for seed in range(12)]

    def nulls(array, i):
        return pc.if_else(pc.less(u[11 - i], 0.02), pa.scalar(None, array.type), array)

    def index(values, n):
        return pc.cast(pc.floor(pc.multiply(values, n)), pa.int32())

    stores = pa.array([f"store_{i:02d}" for i in range(50)])
    categories = pa.array(["food", "toys", "books", "tools", "garden", "music", "games", "sport", "home", "auto"])
    normal = pc.subtract(pc.add(pc.add(u[0], u[1]), u[2]), 1.5)
    columns = {
        "price": pc.add(pc.multiply(normal, 40.0), 100.0),
        "quantity": pc.cast(pc.floor(pc.multiply(u[3], 500.0)), pa.int32()),
        "amount": pc.if_else(pc.less(u[4], 0.3), 0.0, pc.exp(pc.multiply(normal, 3.0))),
        "discount": pc.cast(pc.multiply(u[5], 0.5), pa.float32()),
        "store": stores.take(index(u[6], 50)),
        "category": categories.take(index(u[7], 10)),
        "returned": pc.less(u[8], 0.1),
        "day": pc.cast(pc.cast(pc.add(pc.floor(pc.multiply(u[9], 3650.0)), 17000.0), pa.int32()), pa.date32()),
        "at": pc.cast(
            pc.cast(pc.add(pc.floor(pc.multiply(u[10], 3.0e11)), 1.6e12), pa.int64()), pa.timestamp("ms", tz="UTC")
        ),
        "rating": pc.cast(pc.add(index(u[1], 5), 1), pa.int8()),
    }
    table = pa.table({name: nulls(array, i) for i, (name, array) in enumerate(columns.items())})
    pq.write_table(table, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
