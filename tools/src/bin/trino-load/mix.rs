//! The workloads (`--mix`): the SQL each virtual client posts, with the `/* emulator: ... */` hints that
//! make `trino-emulator` answer the way the mix needs (see its `sql.rs` and `queries.rs`).
//!
//! The emulator answers every POST with a queued page, the first queued GET with a "dispatched" page
//! pointing at `executing/0`, then one executing page per data page and a final page, so a query of
//! `pages` data pages takes `2 + pages` follow-up GETs (`pages=0`: 2, the fewest possible).

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// The fewest requests a Trino query takes: POST + 2 follow-ups (queued → dispatched, then one
    /// executing answer that is already final), with a statement of a few bytes. Trino's
    /// `Query.getNextResult` gives a page that carries rows a `nextUri`, so only a query without result
    /// rows (an empty result, most DDL, `SET SESSION`) finishes on its first executing answer.
    Tiny,
    /// `SELECT 1`: POST + 3 follow-ups (queued → dispatched, one data page of one row, final page).
    Short,
    /// A ~2 KB SELECT with joins and many predicates and no data pages: POST + 2 follow-ups.
    Newquery,
    /// Long polling: 3 data pages, each held 200 ms by the emulator (POST + 5 follow-ups, ~600 ms).
    Long,
    /// 40 small data pages (one row each): POST + 42 follow-ups, so follow-ups are 98% of requests.
    Paged,
    /// 20 data pages of 330,000 rows each: 5.0 MB of JSON per page from an emulator with a one-letter
    /// `--name` (as the benchmark's), 7 MB from `trino-a` (a row is `["{name}",page,row]`).
    Large,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Tiny => "tiny",
            Mix::Short => "short",
            Mix::Newquery => "newquery",
            Mix::Long => "long",
            Mix::Paged => "paged",
            Mix::Large => "large",
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Mix::Tiny => "SELECT 1 WHERE false /* emulator: pages=0 queued_polls=1 */",
            Mix::Short => "SELECT 1 /* emulator: pages=1 rows=1 queued_polls=1 */",
            Mix::Newquery => NEW_QUERY,
            Mix::Long => "SELECT 1 /* emulator: pages=3 rows=10 delay_ms=200 queued_polls=1 */",
            Mix::Paged => "SELECT 1 /* emulator: pages=40 rows=1 queued_polls=1 */",
            Mix::Large => {
                "SELECT * FROM tpch.sf100.lineitem /* emulator: pages=20 rows=330000 queued_polls=1 */"
            }
        }
    }
}

/// A realistic reporting query of about 2 KB: catalog-qualified tables, joins, a long WHERE clause.
const NEW_QUERY: &str = "\
SELECT o.order_id, o.order_date, o.order_status, o.sales_channel, c.customer_id, c.customer_name, \
c.customer_segment, c.loyalty_tier, r.region_name, r.country_code, p.product_id, p.product_category, \
p.brand, s.store_name, SUM(li.quantity) AS units, \
SUM(li.quantity * li.unit_price * (1 - li.discount)) AS net_revenue, \
SUM(li.quantity * li.unit_cost) AS total_cost, COUNT(DISTINCT li.line_id) AS line_count \
FROM hive.sales.orders o \
JOIN hive.sales.line_items li ON li.order_id = o.order_id AND li.order_date = o.order_date \
JOIN hive.crm.customers c ON c.customer_id = o.customer_id \
JOIN hive.reference.regions r ON r.region_id = c.region_id \
JOIN iceberg.catalog.products p ON p.product_id = li.product_id \
LEFT JOIN hive.sales.stores s ON s.store_id = o.store_id \
WHERE o.order_date BETWEEN DATE '2025-01-01' AND DATE '2025-03-31' \
AND o.order_status IN ('SHIPPED', 'DELIVERED', 'INVOICED', 'PARTIALLY_SHIPPED') \
AND o.sales_channel IN ('WEB', 'MOBILE', 'STORE', 'PARTNER') \
AND c.customer_segment IN ('ENTERPRISE', 'MID_MARKET', 'SMB') \
AND c.loyalty_tier <> 'BLOCKED' AND c.is_test_account = false \
AND r.country_code IN ('US', 'CA', 'MX', 'GB', 'DE', 'FR', 'NL', 'SE', 'ES', 'IT', 'JP', 'AU', 'BR') \
AND p.product_category IN ('electronics', 'home', 'garden', 'sports', 'toys', 'books', 'apparel') \
AND p.brand NOT IN ('internal', 'sample', 'discontinued') AND p.is_active = true \
AND li.quantity > 0 AND li.unit_price BETWEEN 0.01 AND 100000 AND li.discount < 0.9 \
AND (s.store_id IS NULL OR s.store_type IN ('flagship', 'outlet', 'franchise')) \
AND o.total_amount > 10 AND o.currency = 'USD' AND o.fraud_score < 0.75 \
AND lower(o.coupon_code) NOT LIKE 'test%' \
AND o.customer_id NOT IN (SELECT customer_id FROM hive.crm.blocklist) \
GROUP BY o.order_id, o.order_date, o.order_status, o.sales_channel, c.customer_id, c.customer_name, \
c.customer_segment, c.loyalty_tier, r.region_name, r.country_code, p.product_id, p.product_category, \
p.brand, s.store_name \
HAVING SUM(li.quantity * li.unit_price * (1 - li.discount)) > 250 \
ORDER BY net_revenue DESC, o.order_date DESC \
LIMIT 1000 \
/* emulator: pages=0 queued_polls=1 */";

#[cfg(test)]
mod tests {
    use trino_router::domain::statement::{Defaults, Limits, StatementKind, analyze};

    use super::*;

    #[test]
    fn the_new_query_is_a_two_kilobyte_select_the_router_can_read() {
        let sql = Mix::Newquery.sql();
        assert!((1900..=2300).contains(&sql.len()), "{} bytes", sql.len());
        let facts = analyze(sql, &Defaults::default(), &Limits::default());
        assert_eq!(facts.kind, StatementKind::Select);
        assert!(facts.tables.contains(&"hive.sales.orders".to_owned()), "{:?}", facts.tables);
        assert!(facts.catalogs.contains(&"iceberg".to_owned()), "{:?}", facts.catalogs);
    }

    #[test]
    fn the_tiny_query_is_tiny_and_has_no_data_pages() {
        let sql = Mix::Tiny.sql();
        assert!(sql.len() < 64, "{} bytes", sql.len());
        assert!(sql.contains("pages=0"), "{sql}");
    }

    #[test]
    fn every_mix_carries_hints() {
        for mix in Mix::value_variants() {
            assert!(mix.sql().contains("/* emulator: "), "{}", mix.name());
        }
    }
}
