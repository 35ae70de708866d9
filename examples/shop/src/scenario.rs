//! The scenarios `shop demo` and `shop load` drive: a catalogue, customers placing
//! orders concurrently (some with declined cards, some for products that run out),
//! then shipping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Shop, ShopError};

/// The catalogue: SKU, name, price in cents, stock. Two products have little stock, so
/// some orders find them gone.
pub const CATALOGUE: [(&str, &str, u64, u64); 12] = [
    ("sku-kettle", "Electric kettle", 3_499, 400),
    ("sku-mug", "Stoneware mug", 1_299, 900),
    ("sku-teapot", "Cast-iron teapot", 5_900, 250),
    ("sku-grinder", "Burr coffee grinder", 8_950, 200),
    ("sku-press", "French press", 2_750, 300),
    ("sku-scale", "Kitchen scale", 1_999, 300),
    ("sku-filter", "Paper filters (100)", 499, 2_000),
    ("sku-beans", "Espresso beans 1 kg", 2_400, 800),
    ("sku-tea", "Sencha tea 250 g", 1_450, 800),
    ("sku-tray", "Walnut serving tray", 4_200, 150),
    ("sku-lamp", "Limited edition lamp", 12_900, 12),
    ("sku-print", "Signed art print", 9_900, 8),
];

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ran {
    /// Orders placed.
    pub placed: u64,
    /// Orders refused up front (a domain rule).
    pub refused: u64,
    /// Commands sent by the scenario itself.
    pub commands: u64,
    /// How long placing took.
    pub seconds: f64,
}

/// Lists the catalogue.
pub async fn catalogue(shop: &Shop) -> Result<(), ShopError> {
    for (sku, name, price, stock) in CATALOGUE {
        shop.create_product(sku, name, price, stock).await?;
    }
    Ok(())
}

/// `orders` orders by `customers` customers, placed by `tasks` concurrent tasks; about
/// one card in twelve is declined. Order ids start with `run`.
pub async fn place_orders(
    shop: &Shop,
    run: &str,
    orders: u64,
    customers: u64,
    tasks: u64,
    progress: bool,
) -> Result<Ran, ShopError> {
    let bar = if progress {
        let bar = ProgressBar::new(orders);
        bar.set_style(
            ProgressStyle::with_template("placing orders {bar:40} {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks.max(1))
        .map(|task| {
            let (shop, next, bar, run) = (shop.clone(), next.clone(), bar.clone(), run.to_owned());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0x5EED ^ task);
                let mut ran = Ran::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= orders {
                        return Ok::<_, ShopError>(ran);
                    }
                    let customer = format!("customer-{:03}", rng.gen_range(0..customers.max(1)));
                    let lines: Vec<(String, u64)> = (0..rng.gen_range(1..=3))
                        .map(|_| {
                            let (sku, ..) = CATALOGUE[rng.gen_range(0..CATALOGUE.len())];
                            (sku.to_owned(), rng.gen_range(1..=3))
                        })
                        .collect::<std::collections::BTreeMap<_, _>>()
                        .into_iter()
                        .collect();
                    let card = if rng.gen_ratio(1, 12) {
                        "card-4000-0000"
                    } else {
                        "card-4242-4242"
                    };
                    ran.commands += 2 + lines.len() as u64;
                    match shop
                        .place_order(&format!("{run}-{i:05}"), &customer, &lines, Some(card))
                        .await
                    {
                        Ok(_) => ran.placed += 1,
                        Err(ShopError::Order(_) | ShopError::Product { .. }) => ran.refused += 1,
                        Err(error) => return Err(error),
                    }
                    bar.inc(1);
                }
            })
        })
        .collect();
    let mut total = Ran::default();
    for worker in workers {
        let ran = worker.await.map_err(annals::Error::handler)??;
        total.placed += ran.placed;
        total.refused += ran.refused;
        total.commands += ran.commands;
    }
    bar.finish_and_clear();
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Ships every `nth` paid order of this run (by id order); returns how many.
pub async fn ship_some(shop: &Shop, run: &str, nth: usize) -> Result<u64, ShopError> {
    let mut shipped = 0;
    let paid: Vec<String> = shop
        .views
        .orders(&shop.db, None)
        .await?
        .into_iter()
        .filter(|o| o.status == "paid" && o.order_id.starts_with(run))
        .map(|o| o.order_id)
        .collect();
    for order in paid.iter().step_by(nth.max(1)) {
        shop.ship(order).await?;
        shipped += 1;
    }
    Ok(shipped)
}

/// A short id for a run, so runs on the same store do not collide.
pub fn run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("r{:x}", millis % 0xFF_FFFF)
}
