-- The store's leader (NULL on a leader), unchanged until the transaction ends.
SELECT leader_url FROM annals_store FOR SHARE
