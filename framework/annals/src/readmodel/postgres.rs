//! Read-model statements on PostgreSQL, through the store's pool.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, Postgres, Row as _, Transaction, TypeInfo, ValueRef};

use super::{Param, Row, Value};
use crate::error::{Error, Result};

fn bind<'q>(sql: &'q str, params: &'q [Param]) -> Query<'q, Postgres, PgArguments> {
    params.iter().fold(sqlx::query(sql), |query, param| match param {
        Param::Int(v) => query.bind(*v),
        Param::Real(v) => query.bind(*v),
        Param::Text(v) => query.bind(v.as_deref()),
        Param::Bool(v) => query.bind(*v),
        Param::Blob(v) => query.bind(v.as_deref()),
    })
}

pub(super) async fn execute(tx: &mut Transaction<'static, Postgres>, sql: &str, params: &[Param]) -> Result<u64> {
    Ok(bind(sql, params).execute(&mut **tx).await?.rows_affected())
}

pub(super) async fn execute_many<R: AsRef<[Param]>>(
    tx: &mut Transaction<'static, Postgres>,
    sql: &str,
    rows: &[R],
) -> Result<u64> {
    let mut changed = 0;
    for row in rows {
        changed += execute(tx, sql, row.as_ref()).await?;
    }
    Ok(changed)
}

pub(super) async fn query<'e, E>(executor: E, sql: &str, params: &[Param]) -> Result<Vec<Row>>
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
