"""Column names shared by every table in recsys.

Every function that reads or writes a frame takes these as defaults, so models,
metrics and writers meet on one schema: interactions ``(user_id, item_id,
rating, timestamp)`` and recommendations ``(user_id, item_id, score, rank)``.
"""

USER_COL = "user_id"
ITEM_COL = "item_id"
RATING_COL = "rating"
TIME_COL = "timestamp"
SCORE_COL = "score"
RANK_COL = "rank"
#: Column of a served list that says who produced it (``model``, ``global``...).
SERVED_BY_COL = "served_by"

#: Columns every interactions table carries after loading (timestamp may be null
#: when the source has none).
INTERACTION_COLS = (USER_COL, ITEM_COL, RATING_COL, TIME_COL)

#: Columns of a recommendations table, the long format every model emits.
RECOMMENDATION_COLS = (USER_COL, ITEM_COL, SCORE_COL, RANK_COL)

#: Optional item table columns.
TITLE_COL = "title"
GENRES_COL = "genres"  # pipe-separated genre names, e.g. "Action|Comedy"
YEAR_COL = "year"

#: Optional user table columns.
AGE_COL = "age"
GENDER_COL = "gender"
OCCUPATION_COL = "occupation"
