"""Creating and cancelling orders."""

from shop.db import Database


def create_order(db: Database, customer_id: int, items: list[tuple[str, int]]) -> int:
    """Insert an order with its items and return the new order id."""
    db.execute_with_retry("INSERT INTO orders(customer_id) VALUES (?)", customer_id)
    order_id = db.query("SELECT max(id) FROM orders")[0][0]
    for sku, quantity in items:
        db.execute_with_retry("INSERT INTO order_items VALUES (?, ?, ?)", order_id, sku, quantity)
    return order_id


def cancel_order(db: Database, order_id: int) -> None:
    """取消订单：删除订单及其全部条目。"""
    db.execute_with_retry("DELETE FROM order_items WHERE order_id = ?", order_id)
    db.execute_with_retry("DELETE FROM orders WHERE id = ?", order_id)


def order_total(db: Database, order_id: int) -> int:
    rows = db.query("SELECT quantity FROM order_items WHERE order_id = ?", order_id)
    return sum(q for (q,) in rows)
