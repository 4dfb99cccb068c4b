//! The statement analysis, one case a line where it can be.

use std::time::{Duration, Instant};

use super::*;
use StatementKind as K;

/// Expected names, as written in a table row.
type Names = &'static [&'static str];

const HIVE_WEB: Defaults<'static> = Defaults { catalog: Some("hive"), schema: Some("web") };
const LIMITS: Limits = Limits { max_bytes: 256 * 1024 };

/// The statements of [`trino_statements`] that sqlparser cannot read: the leading keywords give
/// their kind (and the target of the simple forms).
const PARSER_GAPS: &[&str] = &[
    "CREATE TABLE t (LIKE s INCLUDING PROPERTIES)",
    "ALTER TABLE iceberg.s.t EXECUTE optimize(file_size_threshold => '128MB')",
    "ALTER TABLE t EXECUTE expire_snapshots(retention_threshold => '7d')",
    "ALTER TABLE hive.s.t SET PROPERTIES format = 'ORC'",
    "SHOW CREATE SCHEMA hive.web",
    "DESCRIBE INPUT my_select",
    "DESCRIBE OUTPUT my_select",
    "RESET SESSION query_max_run_time",
    "RESET SESSION iceberg.compression_codec",
    "PREPARE my_select FROM SELECT * FROM tpch.tiny.nation WHERE regionkey = ?",
    "ANALYZE hive.web.page_views WITH (partitions = ARRAY[ARRAY['2024-01-01']])",
    "VALUES 1, 2, 3",
    "TABLE hive.web.page_views",
    "SELECT JSON_QUERY(j, 'lax $.a' WITH ARRAY WRAPPER) FROM t",
    "CREATE OR REPLACE VIEW v SECURITY INVOKER AS SELECT * FROM tpch.tiny.nation",
    "WITH FUNCTION hello(s varchar) RETURNS varchar RETURN concat('Hello ', s) SELECT hello(name) FROM t",
];

fn facts(sql: &str) -> StatementFacts {
    analyze(sql, &HIVE_WEB, &LIMITS)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Kind, tables and catalogs of real-world Trino statements, with catalog `hive` and schema `web`
/// as the session's defaults.
#[test]
fn trino_statements() {
    #[rustfmt::skip]
    let cases: &[(&str, StatementKind, Names, Names)] = &[
        // Queries, names, CTEs, joins.
        ("SELECT * FROM hive.web.page_views WHERE dt = DATE '2024-01-01'", K::Select, &["hive.web.page_views"], &["hive"]),
        ("select count(*) from orders", K::Select, &["hive.web.orders"], &["hive"]),
        ("select * from Hive.Web.Orders", K::Select, &["hive.web.orders"], &["hive"]),
        ("SELECT 1", K::Select, &[], &[]),
        ("SELECT 1;", K::Select, &[], &[]),
        ("SELECT o.orderkey, c.name FROM tpch.sf1.orders o JOIN tpch.sf1.customer c ON o.custkey = c.custkey", K::Select, &["tpch.sf1.customer", "tpch.sf1.orders"], &["tpch"]),
        ("SELECT * FROM sf1.lineitem LEFT JOIN nation USING (nationkey)", K::Select, &["hive.sf1.lineitem", "hive.web.nation"], &["hive"]),
        ("SELECT * FROM hive.web.a, iceberg.web.b WHERE a.id = b.id", K::Select, &["hive.web.a", "iceberg.web.b"], &["hive", "iceberg"]),
        ("SELECT * FROM t1 JOIN t2 ON t1.id = t2.id FULL OUTER JOIN t1 USING (id)", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
        ("WITH recent AS (SELECT * FROM iceberg.sales.orders WHERE ts > now() - INTERVAL '1' DAY) SELECT count(*) FROM recent", K::Select, &["iceberg.sales.orders"], &["iceberg"]),
        ("WITH a AS (SELECT 1 x), b AS (SELECT x FROM a) SELECT * FROM b JOIN hive.s.t ON b.x = t.id", K::Select, &["hive.s.t"], &["hive"]),
        ("WITH orders AS (SELECT 1 id) SELECT * FROM orders JOIN tpch.tiny.orders o ON o.orderkey = orders.id", K::Select, &["tpch.tiny.orders"], &["tpch"]),
        ("SELECT * FROM t WHERE x IN (SELECT id FROM hive.s.u) AND EXISTS (SELECT 1 FROM hive.s.v WHERE v.id = t.id)", K::Select, &["hive.s.u", "hive.s.v", "hive.web.t"], &["hive"]),
        ("SELECT * FROM t1 LEFT JOIN LATERAL (SELECT * FROM t2 WHERE t2.id = t1.id) x ON true", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
        ("SELECT * FROM t1 UNION ALL SELECT * FROM t2 EXCEPT SELECT * FROM t3", K::Select, &["hive.web.t1", "hive.web.t2", "hive.web.t3"], &["hive"]),
        ("(SELECT a FROM t1) UNION (SELECT a FROM t2)", K::Select, &["hive.web.t1", "hive.web.t2"], &["hive"]),
        ("SELECT * FROM system.runtime.queries WHERE state = 'RUNNING'", K::Select, &["system.runtime.queries"], &["system"]),
        // UNNEST, lambdas, table functions, Trino expressions.
        ("SELECT s.name, x.n FROM students s CROSS JOIN UNNEST(s.scores) AS x(n)", K::Select, &["hive.web.students"], &["hive"]),
        ("SELECT * FROM UNNEST(ARRAY[1,2,3]) WITH ORDINALITY AS t(v, i)", K::Select, &[], &[]),
        ("SELECT transform(ARRAY[1, 2, 3], x -> x + 1)", K::Select, &[], &[]),
        ("SELECT reduce(ARRAY[5, 20, 50], 0, (s, x) -> s + x, s -> s)", K::Select, &[], &[]),
        ("SELECT filter(items, i -> i.price > 10), zip_with(a, b, (x, y) -> x * y) FROM iceberg.shop.carts", K::Select, &["iceberg.shop.carts"], &["iceberg"]),
        ("SELECT * FROM TABLE(system.query(query => 'SELECT 1'))", K::Select, &[], &["hive"]),
        ("SELECT * FROM TABLE(pg.system.query(query => 'SELECT * FROM x'))", K::Select, &[], &["pg"]),
        ("SELECT * FROM TABLE(sequence(start => 1, stop => 10))", K::Select, &[], &[]),
        ("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, name)", K::Select, &[], &[]),
        ("SELECT CAST(ROW(1, 2.0) AS ROW(x BIGINT, y DOUBLE)), MAP(ARRAY['a'], ARRAY[1]), ARRAY[1, 2] || ARRAY[3]", K::Select, &[], &[]),
        ("SELECT m['key'], a[1], try(CAST(x AS double)), x IS DISTINCT FROM y FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT approx_percentile(x, 0.5) FILTER (WHERE x > 0) FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT a, b, sum(c) FROM t GROUP BY GROUPING SETS ((a, b), (a), ())", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT listagg(x, ',') WITHIN GROUP (ORDER BY x) FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT * FROM t ORDER BY x OFFSET 10 ROWS FETCH FIRST 10 ROWS ONLY", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT * FROM t TABLESAMPLE BERNOULLI (10)", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT json_extract_scalar(payload, '$.user.id') FROM kafka.default.raw", K::Select, &["kafka.default.raw"], &["kafka"]),
        ("SELECT format_datetime(ts AT TIME ZONE 'UTC', 'yyyy-MM-dd'), U&'\\2603', X'65683F' FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT count(*) OVER (PARTITION BY a ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT rank() OVER w FROM t WINDOW w AS (PARTITION BY a ORDER BY b)", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x PATTERN (A B+) DEFINE B AS B.x > A.x)", K::Select, &["hive.web.t"], &["hive"]),
        // Time travel.
        ("SELECT * FROM iceberg.s.t FOR VERSION AS OF 8954597067493422955", K::Select, &["iceberg.s.t"], &["iceberg"]),
        ("SELECT * FROM iceberg.s.t FOR TIMESTAMP AS OF TIMESTAMP '2022-03-23 09:59:29.803 Europe/Vienna'", K::Select, &["iceberg.s.t"], &["iceberg"]),
        ("SELECT * FROM t FOR VERSION AS OF 'audit-branch' a JOIN u FOR TIMESTAMP AS OF current_timestamp - INTERVAL '1' DAY b ON a.id = b.id", K::Select, &["hive.web.t", "hive.web.u"], &["hive"]),
        // Writes.
        ("INSERT INTO hive.web.events SELECT * FROM kafka.default.raw_events", K::Insert, &["hive.web.events", "kafka.default.raw_events"], &["hive", "kafka"]),
        ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", K::Insert, &["hive.web.t"], &["hive"]),
        ("CREATE TABLE hive.tmp.t1 AS SELECT * FROM hive.web.page_views", K::CreateTableAs, &["hive.tmp.t1", "hive.web.page_views"], &["hive"]),
        ("CREATE TABLE IF NOT EXISTS t2 WITH (format = 'ORC', partitioned_by = ARRAY['ds']) AS SELECT a, ds FROM t1", K::CreateTableAs, &["hive.web.t1", "hive.web.t2"], &["hive"]),
        ("CREATE OR REPLACE TABLE iceberg.s.t AS SELECT 1 AS x", K::CreateTableAs, &["iceberg.s.t"], &["iceberg"]),
        ("CREATE TABLE t AS SELECT * FROM u WITH NO DATA", K::CreateTableAs, &["hive.web.t", "hive.web.u"], &["hive"]),
        ("MERGE INTO iceberg.s.target t USING iceberg.s.source s ON t.id = s.id WHEN MATCHED AND s.op = 'D' THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)", K::Merge, &["iceberg.s.source", "iceberg.s.target"], &["iceberg"]),
        ("UPDATE iceberg.s.t SET v = v + 1 WHERE id = 3", K::Update, &["iceberg.s.t"], &["iceberg"]),
        ("DELETE FROM hive.web.page_views WHERE dt < DATE '2020-01-01'", K::Delete, &["hive.web.page_views"], &["hive"]),
        ("DELETE FROM t WHERE id IN (SELECT id FROM iceberg.s.tombstones)", K::Delete, &["hive.web.t", "iceberg.s.tombstones"], &["hive", "iceberg"]),
        // DDL.
        ("CREATE TABLE orders_copy (orderkey bigint, comment varchar) WITH (format = 'PARQUET')", K::Ddl, &["hive.web.orders_copy"], &["hive"]),
        ("CREATE TABLE t (LIKE s INCLUDING PROPERTIES)", K::Ddl, &["hive.web.t"], &["hive"]),
        ("ALTER TABLE iceberg.s.t EXECUTE optimize(file_size_threshold => '128MB')", K::Ddl, &["iceberg.s.t"], &["iceberg"]),
        ("ALTER TABLE t EXECUTE expire_snapshots(retention_threshold => '7d')", K::Ddl, &["hive.web.t"], &["hive"]),
        ("ALTER TABLE IF EXISTS hive.web.page_views ADD COLUMN referrer varchar", K::Ddl, &["hive.web.page_views"], &["hive"]),
        ("ALTER TABLE t RENAME TO t_old", K::Ddl, &["hive.web.t", "hive.web.t_old"], &["hive"]),
        ("ALTER TABLE hive.s.t SET PROPERTIES format = 'ORC'", K::Ddl, &["hive.s.t"], &["hive"]),
        ("ALTER SCHEMA iceberg.s RENAME TO s2", K::Ddl, &[], &["iceberg"]),
        ("COMMENT ON TABLE hive.web.page_views IS 'views'", K::Ddl, &["hive.web.page_views"], &["hive"]),
        ("COMMENT ON COLUMN orders.comment IS 'free text'", K::Ddl, &["hive.web.orders"], &["hive"]),
        ("DROP TABLE IF EXISTS hive.tmp.t1", K::Ddl, &["hive.tmp.t1"], &["hive"]),
        ("DROP VIEW IF EXISTS iceberg.s.v", K::Ddl, &["iceberg.s.v"], &["iceberg"]),
        ("DROP SCHEMA iceberg.tmp CASCADE", K::Ddl, &[], &["iceberg"]),
        ("CREATE SCHEMA IF NOT EXISTS iceberg.tmp WITH (location = 's3://bucket/tmp/')", K::Ddl, &[], &["iceberg"]),
        ("CREATE VIEW hive.web.v AS SELECT * FROM hive.web.page_views", K::Ddl, &["hive.web.page_views", "hive.web.v"], &["hive"]),
        ("CREATE MATERIALIZED VIEW iceberg.s.mv AS SELECT count(*) c FROM iceberg.s.t", K::Ddl, &["iceberg.s.mv", "iceberg.s.t"], &["iceberg"]),
        ("TRUNCATE TABLE hive.tmp.t1", K::Ddl, &["hive.tmp.t1"], &["hive"]),
        ("GRANT SELECT ON hive.web.page_views TO USER alice", K::Ddl, &["hive.web.page_views"], &["hive"]),
        ("REVOKE INSERT ON TABLE orders FROM ROLE writers", K::Ddl, &["hive.web.orders"], &["hive"]),
        // SHOW, DESCRIBE, EXPLAIN.
        ("SHOW CATALOGS", K::ShowDescribe, &[], &[]),
        ("SHOW SCHEMAS FROM tpch", K::ShowDescribe, &[], &["tpch"]),
        ("SHOW SCHEMAS", K::ShowDescribe, &[], &["hive"]),
        ("SHOW TABLES FROM iceberg.web LIKE 'page%'", K::ShowDescribe, &[], &["iceberg"]),
        ("SHOW TABLES", K::ShowDescribe, &[], &["hive"]),
        ("SHOW CREATE TABLE hive.web.page_views", K::ShowDescribe, &["hive.web.page_views"], &["hive"]),
        ("SHOW CREATE VIEW iceberg.s.v", K::ShowDescribe, &["iceberg.s.v"], &["iceberg"]),
        ("SHOW CREATE SCHEMA hive.web", K::ShowDescribe, &[], &[]),
        ("SHOW COLUMNS FROM tpch.tiny.nation", K::ShowDescribe, &["tpch.tiny.nation"], &["tpch"]),
        ("SHOW STATS FOR orders", K::ShowDescribe, &["hive.web.orders"], &["hive"]),
        ("SHOW STATS FOR (SELECT * FROM orders WHERE a > 1)", K::ShowDescribe, &[], &[]),
        ("SHOW GRANTS ON TABLE iceberg.s.t", K::ShowDescribe, &["iceberg.s.t"], &["iceberg"]),
        ("SHOW FUNCTIONS LIKE 'array%'", K::ShowDescribe, &[], &[]),
        ("SHOW SESSION", K::ShowDescribe, &[], &[]),
        ("DESCRIBE tpch.tiny.nation", K::ShowDescribe, &["tpch.tiny.nation"], &["tpch"]),
        ("DESCRIBE orders", K::ShowDescribe, &["hive.web.orders"], &["hive"]),
        ("DESCRIBE INPUT my_select", K::ShowDescribe, &[], &[]),
        ("DESCRIBE OUTPUT my_select", K::ShowDescribe, &[], &[]),
        ("EXPLAIN SELECT * FROM tpch.tiny.nation", K::Explain, &["tpch.tiny.nation"], &["tpch"]),
        ("EXPLAIN (TYPE DISTRIBUTED, FORMAT JSON) SELECT * FROM tpch.tiny.nation", K::Explain, &["tpch.tiny.nation"], &["tpch"]),
        ("EXPLAIN ANALYZE SELECT count(*) FROM tpch.tiny.lineitem", K::ExplainAnalyze, &["tpch.tiny.lineitem"], &["tpch"]),
        ("EXPLAIN ANALYZE VERBOSE SELECT count(*) FROM lineitem", K::ExplainAnalyze, &["hive.web.lineitem"], &["hive"]),
        ("EXPLAIN ANALYZE SELECT * FROM iceberg.s.t FOR VERSION AS OF 1", K::ExplainAnalyze, &["iceberg.s.t"], &["iceberg"]),
        // Session, USE, CALL, prepared statements, transactions.
        ("USE tpch.tiny", K::Use, &[], &["tpch"]),
        ("USE web2", K::Use, &[], &["hive"]),
        ("SET SESSION query_max_run_time = '10m'", K::SetSession, &[], &[]),
        ("SET SESSION hive.insert_existing_partitions_behavior = 'OVERWRITE'", K::SetSession, &[], &["hive"]),
        ("RESET SESSION query_max_run_time", K::ResetSession, &[], &[]),
        ("RESET SESSION iceberg.compression_codec", K::ResetSession, &[], &["iceberg"]),
        ("SET SESSION AUTHORIZATION 'alice'", K::Other, &[], &[]),
        ("SET ROLE admin", K::Other, &[], &[]),
        ("SET TIME ZONE 'America/New_York'", K::Other, &[], &[]),
        ("CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'too slow')", K::Call, &[], &["system"]),
        ("CALL iceberg.system.rollback_to_snapshot('s', 't', 8954597067493422955)", K::Call, &[], &["iceberg"]),
        ("CALL system.sync_partition_metadata('web', 'page_views', 'FULL')", K::Call, &[], &["hive"]),
        ("PREPARE my_select FROM SELECT * FROM tpch.tiny.nation WHERE regionkey = ?", K::Prepare, &[], &[]),
        ("EXECUTE my_select USING 1, 'a'", K::Execute, &[], &[]),
        ("EXECUTE my_select", K::Execute, &[], &[]),
        ("EXECUTE IMMEDIATE 'SELECT * FROM tpch.tiny.nation WHERE regionkey = ?' USING 2", K::Select, &["tpch.tiny.nation"], &["tpch"]),
        ("EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''SELECT * FROM t'''", K::Execute, &[], &[]),
        ("DEALLOCATE PREPARE my_select", K::Deallocate, &[], &[]),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", K::TransactionControl, &[], &[]),
        ("COMMIT", K::TransactionControl, &[], &[]),
        ("ROLLBACK WORK", K::TransactionControl, &[], &[]),
        ("ANALYZE hive.web.page_views WITH (partitions = ARRAY[ARRAY['2024-01-01']])", K::Other, &["hive.web.page_views"], &["hive"]),
        ("REFRESH MATERIALIZED VIEW iceberg.s.mv", K::Other, &["iceberg.s.mv"], &["iceberg"]),
        // Comments, quoting, bare VALUES and TABLE.
        ("-- leading comment\nSELECT * FROM orders", K::Select, &["hive.web.orders"], &["hive"]),
        ("/* block */ INSERT INTO t SELECT 1", K::Insert, &["hive.web.t"], &["hive"]),
        ("/* a */ -- b\n  /* c\n d */ DELETE FROM t -- trailing", K::Delete, &["hive.web.t"], &["hive"]),
        ("/* SELECT */ -- SELECT\nDROP TABLE t", K::Ddl, &["hive.web.t"], &["hive"]),
        ("SELECT 'it''s -- no comment', \"/* no comment */\" FROM t", K::Select, &["hive.web.t"], &["hive"]),
        ("SELECT * FROM \"hive\".\"Web\".\"Page Views\"", K::Select, &["hive.Web.Page Views"], &["hive"]),
        ("SELECT * FROM \"HIVE\".WEB.Orders", K::Select, &["HIVE.web.orders"], &["HIVE"]),
        ("SELECT \"count\"(*) FROM \"orders\" AS \"o\"", K::Select, &["hive.web.orders"], &["hive"]),
        ("SELECT * FROM \"we\"\"ird\".\"x\"", K::Select, &["hive.we\"ird.x"], &["hive"]),
        ("VALUES 1, 2, 3", K::Select, &[], &[]),
        ("VALUES (1, 'a'), (2, 'b')", K::Select, &[], &[]),
        ("TABLE hive.web.page_views", K::Select, &["hive.web.page_views"], &["hive"]),
        ("  \n\tselect\n*\nfrom\norders\n", K::Select, &["hive.web.orders"], &["hive"]),
        // Known gaps: sqlparser cannot read these, the leading keywords still give the kind.
        // The view's source and the function's table are lost.
        ("SELECT JSON_QUERY(j, 'lax $.a' WITH ARRAY WRAPPER) FROM t", K::Select, &[], &[]),
        ("CREATE OR REPLACE VIEW v SECURITY INVOKER AS SELECT * FROM tpch.tiny.nation", K::Ddl, &["hive.web.v"], &["hive"]),
        ("WITH FUNCTION hello(s varchar) RETURNS varchar RETURN concat('Hello ', s) SELECT hello(name) FROM t", K::Select, &[], &[]),
        // A table passed to a table function is not seen.
        ("SELECT * FROM TABLE(exclude_columns(input => TABLE(orders), columns => DESCRIPTOR(comment)))", K::Select, &[], &[]),
    ];
    for (sql, kind, tables, catalogs) in cases {
        let parsed = parse(sql, &Scope::new(&HIVE_WEB), &LIMITS, false).is_some();
        assert_eq!(parsed, !PARSER_GAPS.contains(sql), "parsed: {sql}");
        let f = facts(sql);
        assert_eq!((f.kind, &f.tables, &f.catalogs), (*kind, &strings(tables), &strings(catalogs)), "{sql}");
        let all: BTreeSet<&String> = f.tables_read.iter().chain(&f.tables_written).collect();
        assert_eq!(all.into_iter().cloned().collect::<Vec<_>>(), f.tables, "read ∪ written: {sql}");
    }
    assert!(cases.len() >= 60);
}

/// Which tables are read and which are written, and the schemas named.
#[test]
fn reads_writes_and_schemas() {
    #[rustfmt::skip]
    let cases: &[(&str, Names, Names, Names)] = &[
        ("INSERT INTO hive.web.events SELECT * FROM kafka.default.raw", &["kafka.default.raw"], &["hive.web.events"], &["hive.web", "kafka.default"]),
        ("INSERT INTO t SELECT * FROM t", &["hive.web.t"], &["hive.web.t"], &["hive.web"]),
        ("CREATE TABLE s.a AS SELECT * FROM b", &["hive.web.b"], &["hive.s.a"], &["hive.s", "hive.web"]),
        ("UPDATE t SET v = 1", &[], &["hive.web.t"], &["hive.web"]),
        ("UPDATE t SET v = (SELECT max(v) FROM t)", &["hive.web.t"], &["hive.web.t"], &["hive.web"]),
        ("UPDATE t SET v = 1 WHERE id IN (SELECT id FROM u)", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", &["hive.web.u"], &["hive.web.t"], &["hive.web"]),
        ("EXPLAIN INSERT INTO t SELECT * FROM s", &["hive.web.s"], &[], &["hive.web"]),
        ("EXPLAIN ANALYZE INSERT INTO t SELECT * FROM s", &["hive.web.s"], &["hive.web.t"], &["hive.web"]),
        ("ALTER TABLE t EXECUTE optimize", &[], &["hive.web.t"], &["hive.web"]),
        ("CREATE VIEW v AS SELECT * FROM t", &["hive.web.t"], &["hive.web.v"], &["hive.web"]),
        ("SHOW CREATE TABLE t", &["hive.web.t"], &[], &["hive.web"]),
        ("SHOW TABLES FROM iceberg.s", &[], &[], &["iceberg.s"]),
        ("SHOW TABLES FROM s", &[], &[], &["hive.s"]),
        ("SHOW TABLES", &[], &[], &["hive.web"]),
        ("USE tpch.tiny", &[], &[], &["tpch.tiny"]),
        ("USE tiny", &[], &[], &["hive.tiny"]),
        ("CREATE SCHEMA s", &[], &[], &["hive.s"]),
        ("DROP SCHEMA IF EXISTS iceberg.s", &[], &[], &["iceberg.s"]),
        ("CALL system.runtime.kill_query('x')", &[], &[], &["system.runtime"]),
        ("SELECT * FROM TABLE(pg.system.query(query => 'SELECT 1'))", &[], &[], &["pg.system"]),
    ];
    for (sql, read, written, schemas) in cases {
        let f = facts(sql);
        assert_eq!(
            (&f.tables_read, &f.tables_written, &f.schemas),
            (&strings(read), &strings(written), &strings(schemas)),
            "{sql}"
        );
    }
}

/// Names complete only as far as the defaults reach; what is known still counts.
#[test]
fn defaults() {
    let d = |catalog, schema| Defaults { catalog, schema };
    #[rustfmt::skip]
    let cases: &[(Defaults<'_>, &str, Names, Names, Names)] = &[
        (d(None, None), "SELECT * FROM t", &[], &[], &[]),
        (d(None, None), "SELECT * FROM s.t", &[], &[], &[]),
        (d(None, None), "SELECT * FROM c.s.t", &["c.s.t"], &["c.s"], &["c"]),
        (d(None, Some("web")), "SELECT * FROM t", &[], &[], &[]),
        (d(Some("hive"), None), "SELECT * FROM t", &[], &[], &["hive"]),
        (d(Some("hive"), None), "SELECT * FROM s.t JOIN u ON true", &["hive.s.t"], &["hive.s"], &["hive"]),
        (d(Some("Hive"), Some("WEB")), "SELECT * FROM t", &["hive.web.t"], &["hive.web"], &["hive"]),
        (d(Some(""), Some("")), "SELECT * FROM t", &[], &[], &[]),
        (d(None, None), "SHOW TABLES", &[], &[], &[]),
        (d(None, None), "USE web", &[], &[], &[]),
        (d(None, None), "SELECT * FROM a.b.c.d", &[], &[], &[]),
    ];
    for (defaults, sql, tables, schemas, catalogs) in cases {
        let f = analyze(sql, defaults, &LIMITS);
        assert_eq!(
            (&f.tables, &f.schemas, &f.catalogs),
            (&strings(tables), &strings(schemas), &strings(catalogs)),
            "{defaults:?} {sql}"
        );
    }
}

#[test]
fn query_ids_and_transactions() {
    const ID: &str = "20240101_120000_00001_abcde";
    #[rustfmt::skip]
    let cases: &[(&str, Names, bool)] = &[
        ("CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'slow')", &[ID], false),
        ("CALL system.runtime.kill_query(message => 'slow', query_id => '20240101_120000_00001_abcde')", &[ID], false),
        ("CALL system.runtime.kill_query('20240101_120000_00001_abcde')", &[ID], false),
        ("call SYSTEM.RUNTIME.KILL_QUERY('20240101_120000_00001_abcde', 'slow')", &[ID], false),
        ("CALL system.runtime.kill_query(query_id => 'NOT AN ID')", &[], false),
        ("CALL system.runtime.kill_query(query_id => 42)", &[], false),
        ("CALL iceberg.system.expire_snapshots('20240101_120000_00001_abcde')", &[], false),
        ("SELECT '20240101_120000_00001_abcde'", &[], false),
        ("START TRANSACTION", &[], true),
        ("START TRANSACTION READ WRITE", &[], true),
        ("COMMIT", &[], false),
        ("EXPLAIN ANALYZE CALL system.runtime.kill_query('20240101_120000_00001_abcde')", &[ID], false),
    ];
    for (sql, ids, starts) in cases {
        let f = facts(sql);
        assert_eq!((&f.query_ids, f.starts_transaction), (&strings(ids), *starts), "{sql}");
    }
}

#[test]
fn prepared_statements() {
    let header = "my_select=SELECT+*+FROM+tpch.tiny.nation+WHERE+regionkey+%3D+%3F,\
                  ins=INSERT+INTO+t+VALUES+(1%2C+%27a+b%27),My+Stmt=DELETE+FROM+iceberg.s.t";
    let run = |name| analyze_execute(header, name, &HIVE_WEB, &LIMITS).map(|f| (f.kind, f.tables));
    assert_eq!(run("my_select"), Some((K::Select, strings(&["tpch.tiny.nation"]))));
    assert_eq!(run("ins"), Some((K::Insert, strings(&["hive.web.t"]))));
    assert_eq!(run("My Stmt"), Some((K::Delete, strings(&["iceberg.s.t"]))));
    assert_eq!(run("MY_SELECT"), Some((K::Select, strings(&["tpch.tiny.nation"]))));
    assert_eq!(run("missing"), None);
    assert_eq!(analyze_execute("", "x", &HIVE_WEB, &LIMITS), None);
    assert_eq!(analyze_execute("x=%FF%FE", "x", &HIVE_WEB, &LIMITS), None);
    assert_eq!(analyze_execute("x", "x", &HIVE_WEB, &LIMITS), None);
    assert_eq!(analyze_execute("x=%zz", "x", &HIVE_WEB, &LIMITS).map(|f| f.kind), Some(K::Unknown));
    // An exact match wins over a match ignoring case.
    let header = "A=SELECT+1,a=DELETE+FROM+t";
    assert_eq!(analyze_execute(header, "a", &HIVE_WEB, &LIMITS).map(|f| f.kind), Some(K::Delete));

    #[rustfmt::skip]
    let names: &[(&str, Option<&str>)] = &[
        ("EXECUTE my_select USING 1", Some("my_select")),
        ("-- c\nexecute My_Select", Some("My_Select")),
        ("EXECUTE \"my \"\"odd\"\" name\"", Some("my \"odd\" name")),
        ("EXECUTE IMMEDIATE 'SELECT 1'", None),
        ("EXECUTE", None),
        ("EXECUTE\"\"", None), // found by fuzzing: an empty quoted name was a name
        ("SELECT 1", None),
        ("", None),
    ];
    for (sql, expected) in names {
        assert_eq!(execute_name(sql).as_deref(), *expected, "{sql}");
    }
}

#[test]
fn kind_names() {
    #[rustfmt::skip]
    let kinds = [
        (K::Select, "select"), (K::Insert, "insert"), (K::CreateTableAs, "create_table_as"),
        (K::Update, "update"), (K::Delete, "delete"), (K::Merge, "merge"), (K::Ddl, "ddl"),
        (K::ShowDescribe, "show_describe"), (K::Explain, "explain"), (K::ExplainAnalyze, "explain_analyze"),
        (K::SetSession, "set_session"), (K::ResetSession, "reset_session"), (K::Use, "use"),
        (K::Call, "call"), (K::Execute, "execute"), (K::Prepare, "prepare"), (K::Deallocate, "deallocate"),
        (K::TransactionControl, "transaction_control"), (K::Other, "other"), (K::Unknown, "unknown"),
    ];
    for (kind, name) in kinds {
        assert_eq!(kind.as_str(), name);
    }
}

/// Input that is not SQL: no panic, and the kind and target only where leading keywords give them.
#[test]
fn bad_input() {
    #[rustfmt::skip]
    let cases: &[(&str, StatementKind, Names)] = &[
        ("", K::Unknown, &[]),
        ("   \n\t ", K::Unknown, &[]),
        (";", K::Unknown, &[]),
        (";;;", K::Unknown, &[]),
        ("-- only a comment", K::Unknown, &[]),
        ("/* only a comment */", K::Unknown, &[]),
        ("/* unterminated SELECT 1", K::Unknown, &[]),
        ("'", K::Unknown, &[]),
        ("\"", K::Unknown, &[]),
        ("SELECT 'unterminated FROM t", K::Select, &[]),
        ("SELECT \"unterminated FROM t", K::Select, &[]),
        ("SELECT * FROM t WHERE a = 'x", K::Select, &[]),
        ("INSERT INTO t VALUES ('a", K::Insert, &["hive.web.t"]),
        ("UPDATE t SET a = 'x", K::Update, &["hive.web.t"]),
        ("SELECT 1; DROP TABLE t", K::Unknown, &[]),
        ("\0", K::Unknown, &[]),
        ("\0SELECT 1", K::Unknown, &[]),
        ("SELECT \0 FROM t", K::Select, &[]),
        ("\u{7f}\u{1}\u{2}", K::Unknown, &[]),
        ("\u{feff}SELECT 1", K::Unknown, &[]),
        ("SELEC * FROM t", K::Unknown, &[]),
        ("hello world", K::Unknown, &[]),
        ("BEGIN; SELECT 1; END", K::Unknown, &[]),
        ("))))", K::Unknown, &[]),
        ("SELECT 1)", K::Select, &[]),
        ("((((DROP TABLE t", K::Unknown, &[]),
        ("((((SELECT 1", K::Select, &[]),
        ("START", K::Unknown, &[]),
        ("SELECT FROM WHERE", K::Select, &[]),
        ("DROP TABLE a.b.c.d", K::Ddl, &[]),
        ("ÄÖÜ ß", K::Unknown, &[]),
        ("SELECT * FROM t WHERE x = 'ÄÖÜ' AND y = \"ü\"", K::Select, &["hive.web.t"]),
        ("🦀", K::Unknown, &[]),
    ];
    for (sql, kind, tables) in cases {
        let f = facts(sql);
        assert_eq!((f.kind, &f.tables), (*kind, &strings(tables)), "{sql:?}");
    }
    // Pseudo-random bytes, as a client might send by mistake.
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(facts(&text).kind, K::Unknown);
}

/// Every prefix of real statements (cut anywhere) is analyzed without a panic.
#[test]
fn truncated_statements() {
    let statements = [
        "WITH a AS (SELECT * FROM \"x\"\"y\".t /* c */) SELECT transform(v, x -> x + 1) FROM a -- end",
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET v = 'ä' WHEN NOT MATCHED THEN INSERT VALUES (1)",
        "SELECT * FROM iceberg.s.t FOR TIMESTAMP AS OF TIMESTAMP '2022-03-23 09:59:29.803 Europe/Vienna'",
        "CALL system.runtime.kill_query(query_id => '20240101_120000_00001_abcde', message => 'x')",
        "EXECUTE IMMEDIATE 'SELECT * FROM t WHERE a = ''b''' USING 1",
    ];
    for sql in statements {
        for (end, _) in sql.char_indices() {
            let _ = facts(&sql[..end]);
            let limits = Limits { max_bytes: end };
            let _ = analyze(sql, &HIVE_WEB, &limits);
        }
    }
}

fn timed(sql: &str, limits: &Limits) -> (StatementFacts, Duration) {
    let start = Instant::now();
    let facts = analyze(sql, &HIVE_WEB, limits);
    (facts, start.elapsed())
}

/// Pathological input is refused before the parser spends time or stack on it. The bound is a
/// plain upper bound for a debug build, not a benchmark.
#[test]
fn pathological_input_is_cheap() {
    let unlimited = Limits { max_bytes: usize::MAX };
    let mb = 1 << 20;
    #[rustfmt::skip]
    let cases: Vec<(&str, String, StatementKind)> = vec![
        ("1 MB of (", "(".repeat(mb), K::Unknown),
        ("1 MB of )", ")".repeat(mb), K::Unknown),
        ("SELECT and 1 MB of (", format!("SELECT {}", "(".repeat(mb)), K::Select),
        ("1 MB of NUL", "\0".repeat(mb), K::Unknown),
        ("1 MB unterminated string", format!("SELECT '{}", "a".repeat(mb)), K::Select),
        ("1 MB unterminated comment", format!("/* {}", "a".repeat(mb)), K::Unknown),
        // Parses fine, but the syntax tree of a 150,000-link chain overflows the stack when dropped.
        ("1 MB OR chain", format!("SELECT * FROM t WHERE {}1 = 1", "1 = 1 OR ".repeat(mb / 9)), K::Select),
        ("1 MB UNION chain", "SELECT 1 UNION ".repeat(mb / 15) + "SELECT 1", K::Select),
        ("1 MB of ARRAY[", format!("SELECT {}", "ARRAY[".repeat(mb / 6)), K::Select),
        ("1 MB subscript chain", format!("SELECT a{}", "[1]".repeat(mb / 3)), K::Select),
        ("1 MB XOR chain", format!("SELECT {}1", "1 XOR ".repeat(mb / 6)), K::Select),
        ("1 MB of EXPLAIN", format!("{}SELECT 1", "EXPLAIN ".repeat(mb / 8)), K::Explain),
        ("1 MB of IF", format!("{}SELECT 1", "IF 1 THEN ".repeat(mb / 10)), K::Unknown),
    ];
    for (label, sql, kind) in &cases {
        let (facts, took) = timed(sql, &unlimited);
        assert_eq!(facts.kind, *kind, "{label}");
        assert!(facts.tables.is_empty(), "{label}");
        assert!(took < Duration::from_millis(100), "{label}: {took:?}");
    }
}

#[test]
fn over_max_bytes_only_the_prefix_is_scanned() {
    let limits = Limits { max_bytes: 64 * 1024 };
    let in_list = (0..200_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    #[rustfmt::skip]
    let cases: Vec<(String, StatementKind, Names)> = vec![
        (format!("SELECT * FROM t WHERE id IN ({in_list})"), K::Select, &[]),
        (format!("INSERT INTO iceberg.s.t VALUES ({in_list})"), K::Insert, &["iceberg.s.t"]),
        (format!("-- comment\nDELETE FROM t WHERE id IN ({in_list})"), K::Delete, &["hive.web.t"]),
        (format!("CREATE TABLE t AS SELECT * FROM u WHERE id IN ({in_list})"), K::CreateTableAs, &["hive.web.t"]),
        (format!("CREATE TABLE t (c varchar) COMMENT '{}'", "x".repeat(100_000)), K::Ddl, &["hive.web.t"]),
        (format!("/* {} */ SELECT 1", "x".repeat(100_000)), K::Unknown, &[]),
        (format!("SELECT '{}'", "é".repeat(100_000)), K::Select, &[]),
    ];
    for (sql, kind, tables) in &cases {
        assert!(sql.len() > limits.max_bytes);
        let (facts, took) = timed(sql, &limits);
        assert_eq!((facts.kind, &facts.tables), (*kind, &strings(tables)), "{}", &sql[..40]);
        assert!(took < Duration::from_millis(100), "{}: {took:?}", &sql[..40]);
    }
    // The same statement within the limit is parsed.
    let sql = "SELECT * FROM t WHERE id IN (1, 2, 3)";
    assert_eq!(analyze(sql, &HIVE_WEB, &Limits { max_bytes: sql.len() }).tables, strings(&["hive.web.t"]));
    assert!(analyze(sql, &HIVE_WEB, &Limits { max_bytes: sql.len() - 1 }).tables.is_empty());
}

/// Deep but sane nesting is parsed; deeper nesting falls back to the leading keywords.
#[test]
fn nesting() {
    let nested =
        |depth: usize| format!("SELECT * FROM {}t{}", "(SELECT * FROM ".repeat(depth), ")".repeat(depth));
    for depth in 0..=MAX_NESTING + 1 {
        let f = facts(&nested(depth));
        let parsed = !f.tables.is_empty();
        assert_eq!((f.kind, parsed), (K::Select, depth <= SUBQUERY_DEPTH), "depth {depth}");
    }
    let parens = |depth: usize| format!("SELECT {}1{} FROM t", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(facts(&parens(20)).tables, strings(&["hive.web.t"]));
    assert!(facts(&parens(MAX_NESTING + 1)).tables.is_empty());
}

/// The deepest subquery nesting sqlparser reads within its recursion limit.
const SUBQUERY_DEPTH: usize = 23;

/// Chains just within [`MAX_OPERATORS`] are parsed, and their syntax trees dropped, on a test
/// thread's 2 MiB stack.
#[test]
fn long_chains() {
    let n = MAX_OPERATORS - 10;
    #[rustfmt::skip]
    let cases = [
        format!("SELECT * FROM t WHERE {}1", "1 OR ".repeat(n)),
        format!("SELECT a{} FROM t", "[1]".repeat(n)),
        format!("SELECT {}x FROM t", "'a' || ".repeat(n / 2)),
        format!("SELECT 1 FROM t {}", "UNION SELECT 1 FROM t ".repeat(n)),
        format!("SELECT * FROM t WHERE a IN ({})", vec!["1"; 5 * n].join(", ")),
    ];
    for sql in &cases {
        assert_eq!(facts(sql).tables, strings(&["hive.web.t"]), "{}", &sql[..40]);
    }
}

/// Parse times, for the record: `cargo test --lib statement::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    let short = "SELECT * FROM hive.web.page_views WHERE dt = DATE '2024-01-01'";
    let long = "\
        -- daily engagement report\n\
        WITH daily AS (\
            SELECT date_trunc('day', v.ts) AS day, v.user_id, count(*) AS views, approx_distinct(v.url) AS urls, \
                   max_by(v.url, v.ts) AS last_url, sum(CASE WHEN v.referrer LIKE '%google%' THEN 1 ELSE 0 END) AS search \
            FROM hive.web.page_views v \
            JOIN hive.web.users u ON v.user_id = u.id \
            WHERE v.ts >= current_timestamp - INTERVAL '30' DAY AND u.country IN ('AT', 'DE', 'CH', 'FR', 'IT') \
              AND v.url NOT LIKE '%/health%' AND u.created_at < DATE '2024-01-01' \
            GROUP BY 1, 2\
        ), sessions AS (\
            SELECT s.user_id, s.session_id, min(s.ts) AS started, max(s.ts) AS ended, \
                   date_diff('second', min(s.ts), max(s.ts)) AS seconds, cardinality(array_agg(DISTINCT s.device)) AS devices \
            FROM iceberg.events.sessions FOR TIMESTAMP AS OF TIMESTAMP '2024-06-01 00:00:00 UTC' s \
            CROSS JOIN UNNEST(s.tags) AS t(tag) \
            WHERE t.tag <> 'bot' GROUP BY s.user_id, s.session_id\
        ), scored AS (\
            SELECT d.*, coalesce(se.seconds, 0) AS seconds, se.devices, \
                   rank() OVER (PARTITION BY d.day ORDER BY d.views DESC, d.urls DESC) AS rnk, \
                   avg(d.views) OVER (PARTITION BY d.user_id ORDER BY d.day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS avg7, \
                   transform(filter(array_agg(se.session_id) OVER (PARTITION BY d.user_id), x -> x IS NOT NULL), x -> upper(x)) AS ids \
            FROM daily d LEFT JOIN sessions se ON se.user_id = d.user_id AND date_trunc('day', se.started) = d.day\
        )\
        SELECT sc.day, sc.user_id, a.account_name, a.tier, sc.views, sc.urls, sc.search, sc.seconds, sc.rnk, \
               round(sc.avg7, 2) AS avg7, \
               CASE WHEN sc.views > 100 THEN 'heavy' WHEN sc.views > 10 THEN 'medium' ELSE 'light' END AS class, \
               json_extract_scalar(a.attributes, '$.owner.email') AS owner, \
               format_datetime(sc.day AT TIME ZONE 'Europe/Vienna', 'yyyy-MM-dd') AS local_day \
        FROM scored sc \
        LEFT JOIN iceberg.crm.accounts a ON a.user_id = sc.user_id \
        WHERE sc.rnk <= 100 AND (a.tier IS NULL OR a.tier IN ('gold', 'platinum')) \
          AND NOT EXISTS (SELECT 1 FROM hive.web.blocklist b WHERE b.user_id = sc.user_id) \
        ORDER BY sc.day DESC, sc.rnk \
        LIMIT 1000";
    let tables = [
        "hive.web.blocklist",
        "hive.web.page_views",
        "hive.web.users",
        "iceberg.crm.accounts",
        "iceberg.events.sessions",
    ];
    assert_eq!(facts(long).tables, strings(&tables));
    let mut in_list = String::from("SELECT * FROM hive.web.page_views WHERE user_id IN (0");
    for i in 1.. {
        if in_list.len() > 256 * 1024 - 20 {
            break;
        }
        in_list.push_str(&format!(", {}", 1_000_000 + i));
    }
    in_list.push(')');
    assert_eq!(facts(&in_list).tables, strings(&["hive.web.page_views"]));
    for (label, sql) in [("short", short), ("2 KB", long), ("256 KiB IN list", &in_list)] {
        let runs = if sql.len() > 10_000 { 20 } else { 500 };
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(facts(std::hint::black_box(sql)));
        }
        let analyzed = start.elapsed() / runs;
        let start = Instant::now();
        for _ in 0..runs {
            let mut tokens =
                Tokenizer::new(&TrinoDialect, std::hint::black_box(sql)).tokenize_with_location().unwrap();
            respell_time_travel(&mut tokens);
            let parsed = Parser::new(&TrinoDialect).with_tokens_with_locations(tokens).parse_statements();
            assert!(parsed.is_ok());
        }
        let parsed = start.elapsed() / runs;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(prescan(std::hint::black_box(sql)));
        }
        let scanned = start.elapsed() / runs;
        println!(
            "{label}: {} bytes, {analyzed:?} per statement ({parsed:?} sqlparser alone, {scanned:?} prescan)",
            sql.len()
        );
    }
}

#[test]
fn quick_placement_agrees_with_analysis() {
    let limits = Limits::default();
    let cases = [
        "SELECT 1",
        "  start   transaction",
        "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "/* c */ START TRANSACTION",
        "START",
        "COMMIT",
        "SELECT * FROM hive.web.t WHERE x = 'start transaction'",
        "CALL system.runtime.kill_query(query_id => '20260101_120000_00001_abcde', message => 'x')",
        "call SYSTEM.RUNTIME.\"KILL_QUERY\"('20260101_120000_00001_abcde')",
        "EXECUTE stmt USING 1",
        "INSERT INTO t SELECT * FROM s",
        "((SELECT 1))",
        "",
        "SELEC * FRM ((",
    ];
    for sql in cases {
        let full = analyze(sql, &Defaults::default(), &limits);
        match quick_placement(sql, &limits) {
            Some(starts) => {
                assert_eq!(starts, full.starts_transaction, "{sql}");
                assert!(full.query_ids.is_empty(), "{sql}");
            }
            None => assert!(
                sql.to_ascii_lowercase().contains("kill_query") || sql.starts_with("EXECUTE"),
                "{sql}"
            ),
        }
    }
}
