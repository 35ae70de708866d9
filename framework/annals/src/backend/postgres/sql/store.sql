SELECT partition_count, store_id FROM annals_store
