//! Read-model transactions on PostgreSQL: ordinary transactions on the store's pool.

use std::any::Any;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Column, Postgres, Row as _, Transaction, TypeInfo, ValueRef};

use crate::error::{Error, Result};
use crate::readmodel::{Answer, Database, Db, Engine, Param, Row, Statements, Tx, Value, Work};

/// The read models of the store behind `pool`.
pub(super) fn database(pool: PgPool) -> Db {
    Db::new(std::sync::Arc::new(Models(pool)))
}

struct Models(PgPool);

#[async_trait]
impl Database for Models {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>> {
        query(&self.0, sql, &params).await
    }

    async fn transaction(&self, work: Work, _writes: bool) -> Result<Answer> {
        let mut tx = Tx::new(PgTx(self.0.begin().await?));
        let result = work(&mut tx).await;
        let PgTx(sql) = tx.into_inner();
        match result {
            Ok(value) => {
                sql.commit().await?;
                Ok(value)
            }
            Err(error) => {
                // Dropping would roll back too; saying so frees the connection now.
                let _ = sql.rollback().await;
                Err(error)
            }
        }
    }
}

struct PgTx(Transaction<'static, Postgres>);

#[async_trait]
impl Statements for PgTx {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64> {
        Ok(bind(sql, params).execute(&mut *self.0).await?.rows_affected())
    }

    async fn execute_many(&mut self, sql: &str, rows: &[&[Param]]) -> Result<u64> {
        let mut changed = 0;
        for row in rows {
            changed += self.execute(sql, row).await?;
        }
        Ok(changed)
    }

    async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
        query(&mut *self.0, sql, params).await
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

fn bind<'q>(sql: &'q str, params: &'q [Param]) -> Query<'q, Postgres, PgArguments> {
    params.iter().fold(sqlx::query(sql), |query, param| match param {
        Param::Int(v) => query.bind(*v),
        Param::Real(v) => query.bind(*v),
        Param::Text(v) => query.bind(v.as_deref()),
        Param::Bool(v) => query.bind(*v),
        Param::Blob(v) => query.bind(v.as_deref()),
    })
}

async fn query<'e, E>(executor: E, sql: &str, params: &[Param]) -> Result<Vec<Row>>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows = bind(sql, params).fetch_all(executor).await?;
    rows.iter().map(row).collect()
}

fn row(row: &PgRow) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            values.push(Value::Null);
            continue;
        }
        values.push(match column.type_info().name() {
            "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i)?)),
            "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
            "INT8" => Value::Int(row.try_get(i)?),
            "BOOL" => Value::Int(i64::from(row.try_get::<bool, _>(i)?)),
            "FLOAT4" => Value::Real(f64::from(row.try_get::<f32, _>(i)?)),
            "FLOAT8" => Value::Real(row.try_get(i)?),
            "BYTEA" => Value::Blob(row.try_get(i)?),
            "UUID" => Value::Text(row.try_get::<uuid::Uuid, _>(i)?.to_string()),
            "TIMESTAMPTZ" => Value::Text(row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?.to_rfc3339()),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i)?),
            _ => {
                return Err(Error::ColumnType {
                    index: i,
                    expected:
                        "int2/4/8, float4/8, bool, bytea, uuid, timestamptz or text (cast other types with ::text)",
                    found: "another PostgreSQL type",
                })
            }
        });
    }
    Ok(Row(values))
}
