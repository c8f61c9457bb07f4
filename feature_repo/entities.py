"""The one entity: a customer of the brand, keyed by the (pseudonymous) ``customer_id``."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of the brand; customer_id is pseudonymous (never a phone or openid).",
)
