SELECT to_regclass('annals_store') IS NOT NULL
