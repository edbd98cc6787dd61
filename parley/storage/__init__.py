"""PostgreSQL storage: the pool, the migrations, and one module per group of tables.

Every function takes a connection (`psycopg.AsyncConnection`): the caller takes it from
the pool (`async with pool.connection() as conn:`) and owns the transaction, so it can
make several calls atomic, like a write tool's handler and its `tool_executions` row. A
function whose own statements must hold together opens `conn.transaction()` itself, which
is a savepoint inside the caller's transaction. Only `db.migrate` and `db.create_pool`
take a conninfo: they run before there is a pool.
"""
