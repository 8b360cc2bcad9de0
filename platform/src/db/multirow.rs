//! Multi-row `INSERT`s on SQLite whose statements are prepared once per connection.
//!
//! A writer thread that stores many rows of one table per transaction (the event writer's
//! `user_events` rows, two per direct message) pays, per statement run, SQLite's reset, binding and VDBE start-up and
//! diesel's walk over the query. One statement for several rows pays those once. Diesel's own
//! batch insert builds a new statement text for every row count and never caches it, so rows
//! are sent here in runs of three fixed sizes ([`BIG`], 8, 1), each a statement type of its own
//! with a static query id: diesel prepares it on first use and finds it again by type.

use std::marker::PhantomData;

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{QueryResult, RunQueryDsl};

/// Rows in the largest statement: 32 × the row's columns parameters, far under SQLite's limit
/// (32,766) for any table here.
pub const BIG: usize = 32;

/// A row of a table that [`insert`] stores.
pub trait Row {
    /// `INSERT INTO table (col, …) VALUES ` — the statement's head.
    const HEAD: &'static str;
    /// A `'static` type naming the row kind, for the statement's query id.
    type Kind: 'static;
    /// Pushes the row's values as `?, ?, …` (bound, in [`Row::HEAD`]'s column order); the
    /// parentheses around them and the commas between rows are [`insert`]'s.
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()>;
}

/// Inserts `rows` in order, in runs of [`BIG`], then 8, then single rows.
pub fn insert<R: Row>(c: &mut SqliteConnection, rows: &[R]) -> QueryResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= BIG {
            Insert::<R, BIG>::new(&rest[..BIG]).execute(c)?;
            BIG
        } else if rest.len() >= 8 {
            Insert::<R, 8>::new(&rest[..8]).execute(c)?;
            8
        } else {
            Insert::<R, 1>::new(&rest[..1]).execute(c)?;
            1
        };
        rest = &rest[n..];
    }
    Ok(())
}

/// `HEAD (…), (…), …` with exactly `N` rows.
struct Insert<'a, R, const N: usize> {
    rows: &'a [R],
}

impl<'a, R, const N: usize> Insert<'a, R, N> {
    fn new(rows: &'a [R]) -> Self {
        debug_assert_eq!(rows.len(), N);
        Self { rows }
    }
}

impl<R: Row, const N: usize> QueryId for Insert<'_, R, N> {
    type QueryId = (PhantomData<R::Kind>, [(); N]);
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R: Row, const N: usize> QueryFragment<Sqlite> for Insert<'_, R, N> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(R::HEAD);
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            row.walk(&mut out)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<R: Row, const N: usize> RunQueryDsl<SqliteConnection> for Insert<'_, R, N> {}
