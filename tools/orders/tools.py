"""τ-bench's 16 retail tools as ``tools.tool.Tool``s over an ``OrderDB``.

Each tool is declared once in ``TOOL_SPECS``: its name, the description the
model reads (τ-bench's text), a strict pydantic argument model (τ-bench's
argument names and descriptions) and the function in ``actions.py``;
``order_tools(db)`` binds them to a database as ``Tool``s, which check the
function's signature against the model when they are built.

A tool never raises: wrong types, missing or unknown arguments come back as
an "Error: invalid arguments for <tool>: ..." string, like τ-bench's own
"Error: ..." results, so the model can correct itself; ``call_tool`` runs an
agent's raw call (tool name + JSON text) the same way.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from tools.orders import actions
from tools.orders.db import OrderDB
from tools.tool import Tool, call_tool

# ------------------------------------------------------- argument models


class _Args(BaseModel):
    # strict: a JSON number is not an id, a string is not a list of ids.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: str | list[str]) -> str | list[str]:
        """JSON's "\\ud800" decodes to a lone surrogate, which SQLite cannot bind: refuse it here."""
        for text in [value] if isinstance(value, str) else value:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("not valid Unicode text (lone surrogate)") from None
        return value


OrderId = Annotated[
    str,
    Field(
        description="The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id."
    ),
]
UserId = Annotated[str, Field(description="The user id, such as 'sara_doe_496'.")]
PaymentMethodId = Annotated[
    str,
    Field(
        description="The payment method id to pay or receive refund for the item price difference, such as "
        "'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details."
    ),
]
Address1 = Annotated[str, Field(description="The first line of the address, such as '123 Main St'.")]
Address2 = Annotated[str, Field(description="The second line of the address, such as 'Apt 1' or ''.")]
City = Annotated[str, Field(description="The city, such as 'San Francisco'.")]
State = Annotated[str, Field(description="The state, such as 'CA'.")]
Country = Annotated[str, Field(description="The country, such as 'USA'.")]
Zip = Annotated[str, Field(description="The zip code, such as '12345'.")]


class FindUserIdByEmailArgs(_Args):
    email: str = Field(description="The email of the user, such as 'something@example.com'.")


class FindUserIdByNameZipArgs(_Args):
    first_name: str = Field(description="The first name of the customer, such as 'John'.")
    last_name: str = Field(description="The last name of the customer, such as 'Doe'.")
    zip: str = Field(description="The zip code of the customer, such as '12345'.")


class UserIdArgs(_Args):
    user_id: UserId


class OrderIdArgs(_Args):
    order_id: OrderId


class ProductIdArgs(_Args):
    product_id: str = Field(
        description="The product id, such as '6086499569'. Be careful the product id is different from the item id."
    )


class NoArgs(_Args):
    pass


class CancelPendingOrderArgs(_Args):
    order_id: OrderId
    # Not a Literal: τ-bench answers a bad reason with "Error: invalid reason".
    reason: Annotated[str, WithJsonSchema({"type": "string", "enum": list(actions.CANCEL_REASONS)})] = Field(
        description="The reason for cancellation, which should be either 'no longer needed' or 'ordered by mistake'."
    )


class ModifyPendingOrderAddressArgs(_Args):
    order_id: OrderId
    address1: Address1
    address2: Address2
    city: City
    state: State
    country: Country
    zip: Zip


class ModifyUserAddressArgs(_Args):
    user_id: UserId
    address1: Address1
    address2: Address2
    city: City
    state: State
    country: Country
    zip: Zip


class ModifyPendingOrderItemsArgs(_Args):
    order_id: OrderId
    item_ids: list[str] = Field(
        description="The item ids to be modified, each such as '1008292230'. There could be duplicate items in the list."
    )
    new_item_ids: list[str] = Field(
        description="The item ids to be modified for, each such as '1008292230'. There could be duplicate items in "
        "the list. Each new item id should match the item id in the same position and be of the same product."
    )
    payment_method_id: PaymentMethodId


class ModifyPendingOrderPaymentArgs(_Args):
    order_id: OrderId
    payment_method_id: PaymentMethodId


class ReturnDeliveredOrderItemsArgs(_Args):
    order_id: OrderId
    item_ids: list[str] = Field(
        description="The item ids to be returned, each such as '1008292230'. There could be duplicate items in the list."
    )
    payment_method_id: PaymentMethodId


class ExchangeDeliveredOrderItemsArgs(_Args):
    order_id: OrderId
    item_ids: list[str] = Field(
        description="The item ids to be exchanged, each such as '1008292230'. There could be duplicate items in the list."
    )
    new_item_ids: list[str] = Field(
        description="The item ids to be exchanged for, each such as '1008292230'. There could be duplicate items in "
        "the list. Each new item id should match the item id in the same position and be of the same product."
    )
    payment_method_id: PaymentMethodId


class CalculateArgs(_Args):
    expression: str = Field(
        description="The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, "
        "operators (+, -, *, /), parentheses, and spaces."
    )


class ThinkArgs(_Args):
    thought: str = Field(description="A thought to think about.")


class TransferToHumanAgentsArgs(_Args):
    summary: str = Field(description="A summary of the user's issue.")


# ------------------------------------------------------------ the specs


@dataclass(frozen=True)
class ToolSpec:
    """One tool before it is bound to a database: what the model sees (name,
    description, args) and what runs. ``run`` takes the ``OrderDB`` first when
    ``uses_db``."""

    name: str
    description: str
    args: type[_Args]
    run: Callable[..., str]
    uses_db: bool = True

    def bind(self, db: OrderDB) -> Tool:
        return Tool(self.name, self.description, self.args, _with_db(self.run, db) if self.uses_db else self.run)


TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "find_user_id_by_email",
        "Find user id by email. If the user is not found, the function will return an error message.",
        FindUserIdByEmailArgs,
        actions.find_user_id_by_email,
    ),
    ToolSpec(
        "find_user_id_by_name_zip",
        "Find user id by first name, last name, and zip code. If the user is not found, the function will return an "
        "error message. By default, find user id by email, and only call this function if the user is not found by "
        "email or cannot remember email.",
        FindUserIdByNameZipArgs,
        actions.find_user_id_by_name_zip,
    ),
    ToolSpec(
        "get_user_details",
        "Get the details of a user, including their orders.",
        UserIdArgs,
        actions.get_user_details,
    ),
    ToolSpec(
        "get_order_details",
        "Get the status and details of an order.",
        OrderIdArgs,
        actions.get_order_details,
    ),
    ToolSpec(
        "get_product_details",
        "Get the inventory details of a product.",
        ProductIdArgs,
        actions.get_product_details,
    ),
    ToolSpec(
        "list_all_product_types",
        "List the name and product id of all product types. Each product type has a variety of different items with "
        "unique item ids and options. There are only 50 product types in the store.",
        NoArgs,
        actions.list_all_product_types,
    ),
    ToolSpec(
        "cancel_pending_order",
        "Cancel a pending order. If the order is already processed or delivered, it cannot be cancelled. The agent "
        "needs to explain the cancellation detail and ask for explicit user confirmation (yes/no) to proceed. If the "
        "user confirms, the order status will be changed to 'cancelled' and the payment will be refunded. The refund "
        "will be added to the user's gift card balance immediately if the payment was made using a gift card, "
        "otherwise the refund would take 5-7 business days to process. The function returns the order details after "
        "the cancellation.",
        CancelPendingOrderArgs,
        actions.cancel_pending_order,
    ),
    ToolSpec(
        "modify_pending_order_address",
        "Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask "
        "for explicit user confirmation (yes/no) to proceed.",
        ModifyPendingOrderAddressArgs,
        actions.modify_pending_order_address,
    ),
    ToolSpec(
        "modify_pending_order_items",
        "Modify items in a pending order to new items of the same product type. For a pending order, this function "
        "can only be called once. The agent needs to explain the exchange detail and ask for explicit user "
        "confirmation (yes/no) to proceed.",
        ModifyPendingOrderItemsArgs,
        actions.modify_pending_order_items,
    ),
    ToolSpec(
        "modify_pending_order_payment",
        "Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for "
        "explicit user confirmation (yes/no) to proceed.",
        ModifyPendingOrderPaymentArgs,
        actions.modify_pending_order_payment,
    ),
    ToolSpec(
        "modify_user_address",
        "Modify the default address of a user. The agent needs to explain the modification detail and ask for "
        "explicit user confirmation (yes/no) to proceed.",
        ModifyUserAddressArgs,
        actions.modify_user_address,
    ),
    ToolSpec(
        "return_delivered_order_items",
        "Return some items of a delivered order. The order status will be changed to 'return requested'. The agent "
        "needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed. The user will "
        "receive follow-up email for how and where to return the item.",
        ReturnDeliveredOrderItemsArgs,
        actions.return_delivered_order_items,
    ),
    ToolSpec(
        "exchange_delivered_order_items",
        "Exchange items in a delivered order to new items of the same product type. For a delivered order, return or "
        "exchange can be only done once by the agent. The agent needs to explain the exchange detail and ask for "
        "explicit user confirmation (yes/no) to proceed.",
        ExchangeDeliveredOrderItemsArgs,
        actions.exchange_delivered_order_items,
    ),
    ToolSpec(
        "calculate",
        "Calculate the result of a mathematical expression.",
        CalculateArgs,
        actions.calculate,
        uses_db=False,
    ),
    ToolSpec(
        "think",
        "Use the tool to think about something. It will not obtain new information or change the database, but just "
        "append the thought to the log. Use it when complex reasoning or some cache memory is needed.",
        ThinkArgs,
        actions.think,
        uses_db=False,
    ),
    ToolSpec(
        "transfer_to_human_agents",
        "Transfer the user to a human agent, with a summary of the user's issue. Only transfer if the user explicitly "
        "asks for a human agent, or if the user's issue cannot be resolved by the agent with the available tools.",
        TransferToHumanAgentsArgs,
        actions.transfer_to_human_agents,
        uses_db=False,
    ),
)


# -------------------------------------------------------------- binding


def order_tools(db: OrderDB) -> list[Tool]:
    """τ-bench's 16 retail tools bound to ``db``, in ``TOOL_SPECS`` order.

    Every tool returns a string: τ-bench's result, or "Error: ..." for bad
    arguments, unknown ids, refused operations, or a locked/unavailable
    database. Write tools commit atomically or not at all. ``.to_openai()``
    and ``.to_langchain()`` give each for other frameworks.
    """
    return [spec.bind(db) for spec in TOOL_SPECS]


def _with_db(run: Callable[..., str], db: OrderDB) -> Callable[..., str]:
    """``run`` with ``db`` bound, answering a locked or failing database with text."""

    def with_db(*args: Any, **kwargs: Any) -> str:
        try:
            return run(db, *args, **kwargs)
        except sqlite3.OperationalError as e:  # locked past the busy timeout, disk full, ...
            return f"Error: order database unavailable: {e}"

    with_db.__signature__ = inspect.signature(functools.partial(run, db))  # type: ignore[attr-defined]
    return with_db


__all__ = ["TOOL_SPECS", "ToolSpec", "call_tool", "order_tools"]
