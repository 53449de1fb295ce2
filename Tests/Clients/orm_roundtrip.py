"""rqlite's Python clients against CairnDB, unmodified: pyrqlite (DB-API) and sqlalchemy-rqlite (the
ORM). Usage: python orm_roundtrip.py HOST PORT USER PASSWORD. Prints OK and exits 0, or fails."""
import sys

import pyrqlite.dbapi2 as dbapi
from sqlalchemy import Column, Integer, String, create_engine, inspect, select
from sqlalchemy.orm import Session, declarative_base

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

# DB-API: parameters, lastrowid, rowcount, fetch, errors as the module's exceptions.
conn = dbapi.connect(host=host, port=port, user=user, password=password)
cur = conn.cursor()
cur.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
cur.execute("INSERT INTO plain(name, score) VALUES (?, ?)", ("ada", 1.5))
assert cur.lastrowid == 1, cur.lastrowid
cur.executemany("INSERT INTO plain(name, score) VALUES (?, ?)", [("grace", 2.5), ("alan", 3.5)])
cur.execute("UPDATE plain SET score = score + 1 WHERE score > ?", (2,))
assert cur.rowcount == 2, cur.rowcount
cur.execute("SELECT name, score FROM plain ORDER BY id")
assert cur.fetchall() == [("ada", 1.5), ("grace", 3.5), ("alan", 4.5)], "rows"
assert [d[0] for d in cur.description] == ["name", "score"], cur.description
try:
    cur.execute("SELECT * FROM nosuch")
    raise AssertionError("a query of a missing table did not fail")
except dbapi.Error:
    pass
conn.close()

# The ORM: create_all, insert, query, update, delete, reflection.
engine = create_engine(f"rqlite+pyrqlite://{user}:{password}@{host}:{port}/")
Base = declarative_base()


class City(Base):
    __tablename__ = "cities"
    id = Column(Integer, primary_key=True)
    name = Column(String(50), nullable=False, unique=True)
    population = Column(Integer)


Base.metadata.create_all(engine)
with Session(engine) as s:
    s.add_all([City(name="Lima", population=10), City(name="Oslo", population=1), City(name="Kyiv", population=3)])
    s.commit()
    big = s.execute(select(City).where(City.population > 2).order_by(City.name)).scalars().all()
    assert [c.name for c in big] == ["Kyiv", "Lima"], [c.name for c in big]
    lima = s.get(City, big[1].id)
    lima.population = 11
    s.delete(s.execute(select(City).where(City.name == "Oslo")).scalar_one())
    s.commit()
    assert [(c.name, c.population) for c in s.execute(select(City).order_by(City.id)).scalars()] == [("Lima", 11), ("Kyiv", 3)]

inspector = inspect(engine)
tables = sorted(inspector.get_table_names())
# The user's tables only: none of CairnDB's own.
assert tables == ["cities", "plain"], tables
# (Inspector.get_columns needs the driver module's sqlite_version_info, which pyrqlite lacks against
# any server: the columns through PRAGMA table_info instead, as SQLAlchemy itself reads them.)
with engine.connect() as c:
    columns = [(row[1], row[5]) for row in c.exec_driver_sql("PRAGMA table_info(cities)")]
assert columns == [("id", 1), ("name", 0), ("population", 0)], columns
print("OK", tables)
