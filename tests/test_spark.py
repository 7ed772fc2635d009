"""The Spark SQL of to_sql runs on a local PySpark session and gives the user_properties table
on the bundled export. Not skipped: without a working pyspark and Java this test fails."""
from __future__ import annotations

import warnings

import pandas as pd
import pyarrow as pa
import pytest
from conftest import EXAMPLE, RUDDER

from cmdseg_nb import load_export, user_properties
from cmdseg_nb._frame import to_frame
from cmdseg_nb._to_sql import to_sql

# pyspark 4 on pandas 3: its own compatibility notices, not ours
pytestmark = [pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

CUSTOM = [
    {"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}},
    {"name": "Order", "trigger": 'type = "track" and event = "ORDER COMPLETED"',
     "data": {"userId": {"@path": "$.userId"}, "user_property.method": {"@path": "$.properties.payment_method"},
              "user_property.total": {"@path": "$.properties.total"}, "user_property.seen": True}},
    {"name": "Events", "trigger": 'type = "track"',
     "data": {"userId": {"@path": "$.userId"}, "user_property_event": {"@path": "$.event"}}},
]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession  # an ImportError here fails the test, as it should
    session = (SparkSession.builder.master("local[2]").appName("cmdseg_nb-tests")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def rudder(spark):
    export = load_export(RUDDER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyspark on pandas 3
        for t in export.tables:
            frame = export.con.execute(f'SELECT * FROM "{t.view}"').df()
            spark.createDataFrame(frame).createOrReplaceTempView(t.name)
    return export


@pytest.mark.parametrize("config", [None, EXAMPLE, CUSTOM],
                         ids=["default", "example", "custom"])
def test_spark_output_gives_the_user_properties_table(spark, rudder, config):
    sql = to_sql(config, "spark", schema=rudder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        got = to_frame(pa.Table.from_pandas(spark.sql(sql).toPandas(), preserve_index=False))
    want = user_properties(rudder, config)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)


def test_spark_skips_blank_user_ids_as_the_receiver(spark, tmp_path):
    from test_to_sql import whitespace_ids
    export = whitespace_ids(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        frame = export.con.execute(f'SELECT * FROM "{export.tables[0].view}"').df()
        spark.createDataFrame(frame).createOrReplaceTempView("identifies")
        got = to_frame(pa.Table.from_pandas(spark.sql(to_sql(None, "spark", schema=export)).toPandas(),
                                            preserve_index=False))
    want = user_properties(export)
    assert list(want["user_id"]) == ["u1"]
    pd.testing.assert_frame_equal(got, want)
