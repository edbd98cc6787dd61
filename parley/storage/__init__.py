"""PostgreSQL storage: the pool, the migrations, and one module per group of tables.

Every function takes a connection: the caller owns the transaction.
"""
