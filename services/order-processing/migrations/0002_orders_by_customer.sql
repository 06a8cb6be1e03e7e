-- A customer's open orders are counted on every new order (CTR_MAX_OPEN_ORDERS_PER_CUSTOMER).
CREATE INDEX orders_by_customer ON orders (customer_id, status);
