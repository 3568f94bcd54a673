"""Retail order tools: τ-bench's customer-service tools over a SQLite database.

db = OrderDB.create("orders.db")       # or OrderDB("orders.db") to open one
tools = order_tools(db)                # τ-bench's 16 tools, as tools.tool.Tool
call_tool(tools, "get_order_details", '{"order_id": "#W2611340"}')
"""

from tools.orders.db import OrderDB
from tools.orders.tools import TOOL_SPECS, call_tool, order_tools

__all__ = ["OrderDB", "TOOL_SPECS", "call_tool", "order_tools"]
