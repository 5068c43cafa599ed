"""Store: SQLAlchemy models, Alembic migrations, engine with retries, leader lease."""
