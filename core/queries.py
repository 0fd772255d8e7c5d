"""Every query the stages run on the manifest, by name; core/manifest.py runs only these.

A query is a constant string with `?` parameters: nothing is built from values at run time.
Each is written in SQLite's SQL; the few that PostgreSQL spells otherwise carry that spelling too,
so the same named query runs on either engine. Grouped by the stage that asks.
"""

from __future__ import annotations


class Query(str):
    """A named query of this module: Manifest's methods take nothing else (mypy checks it).

    `postgres` is its PostgreSQL form: the SQLite text made PostgreSQL's mechanically (`?`
    parameters, INSERT OR IGNORE), or the spelling given where the two engines differ.
    """

    postgres: str

    def __new__(cls, sqlite: str, postgres: str | None = None) -> Query:
        query = super().__new__(cls, sqlite)
        query.postgres = _postgres_form(postgres or sqlite)
        return query


def _postgres_form(sql: str) -> str:
    """PostgreSQL's spelling of what the two engines share: psycopg's `%s` parameters (a literal
    `%`, as in a LIKE pattern, doubled), and SQLite's INSERT OR IGNORE as ON CONFLICT DO NOTHING."""
    sql = sql.replace("%", "%%")
    if sql.lstrip().startswith("INSERT OR IGNORE INTO"):
        sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1) + " ON CONFLICT DO NOTHING"
    elif "INSERT OR" in sql:
        raise ValueError(f"INSERT OR REPLACE needs its PostgreSQL spelling: {sql}")
    return sql.replace("?", "%s")


# --- crawl -------------------------------------------------------------------------------------
SOURCE_KNOWN = Query("SELECT 1 FROM sources WHERE shop = ? AND review_id = ? AND photo_url = ?")
# A product's photo under this review id is stored, or failed and is tried again with the failures.
PRODUCT_SOURCE_KNOWN = Query(
    "SELECT 1 FROM sources WHERE shop = ?1 AND product_id = ?2 AND review_id = ?3 "
    "UNION ALL SELECT 1 FROM failures WHERE shop = ?1 AND product_id = ?2 AND review_id = ?3",
    # PostgreSQL has no numbered parameters: the three are named once, in a row of their own.
    "SELECT 1 FROM (SELECT ?::text AS shop, ?::text AS product_id, ?::text AS review_id) k "
    "WHERE EXISTS (SELECT 1 FROM sources s "
    "  WHERE s.shop = k.shop AND s.product_id = k.product_id AND s.review_id = k.review_id) "
    "OR EXISTS (SELECT 1 FROM failures f "
    "  WHERE f.shop = k.shop AND f.product_id = k.product_id AND f.review_id = k.review_id)",
)
PRODUCT_SEEN = Query("SELECT name, reviews_complete_at FROM products WHERE shop = ? AND product_id = ?")
UPSERT_PRODUCT = Query(
    "INSERT INTO products VALUES (?,?,?,?,?,?,?,NULL) ON CONFLICT DO UPDATE SET "
    "category_id = excluded.category_id, name = excluded.name, url = excluded.url, rank = excluded.rank, "
    "seen_at = excluded.seen_at",
    "INSERT INTO products VALUES (?,?,?,?,?,?,?,NULL) ON CONFLICT (shop, product_id) DO UPDATE SET "
    "category_id = excluded.category_id, name = excluded.name, url = excluded.url, rank = excluded.rank, "
    "seen_at = excluded.seen_at",
)
PRODUCT_REVIEWS_COMPLETE = Query("UPDATE products SET reviews_complete_at = ? WHERE shop = ? AND product_id = ?")
INSERT_PHOTO = Query("INSERT OR IGNORE INTO photos VALUES (?,?,?,?,?,?,?)")
INSERT_SOURCE = Query("INSERT OR IGNORE INTO sources VALUES (?,?,?,?,?,?,?,?)")
UPSERT_FAILURE = Query(
    "INSERT INTO failures VALUES (?,?,?,?,?,?,?,1,?) ON CONFLICT DO UPDATE SET "
    "reason = excluded.reason, attempts = attempts + 1, last_try = excluded.last_try",
    "INSERT INTO failures VALUES (?,?,?,?,?,?,?,1,?) ON CONFLICT (shop, review_id, photo_url) DO UPDATE SET "
    "reason = excluded.reason, attempts = failures.attempts + 1, last_try = excluded.last_try",
)
FORGET_BAD_ITEMS = Query("DELETE FROM bad_items WHERE shop = ? AND page_url = ?")
INSERT_BAD_ITEM = Query("INSERT INTO bad_items VALUES (?,?,?,?,?)")
DELETE_FAILURE = Query("DELETE FROM failures WHERE shop = ? AND review_id = ? AND photo_url = ?")
FAILED_PHOTOS = Query(
    "SELECT review_id, photo_url, product_id, category_id, review_created_at FROM failures WHERE shop = ?"
)

# --- import (crawler/collection.py) -------------------------------------------------------------
ALL_PHOTOS = Query("SELECT sha256 FROM photos")
# A collection's photos were sorted by product already: accepted, unless a person decided before.
ACCEPT_IMPORTED = Query(
    "INSERT OR IGNORE INTO labels (sha256, project_id, task_id, pushed_at, decision, reason, decided_at) "
    "VALUES (?, 0, 0, ?, 'accept', ?, ?)"
)

# --- dedupe ------------------------------------------------------------------------------------
UNCHECKED_PHOTOS = Query(
    "SELECT p.sha256, p.path FROM photos p LEFT JOIN curation c USING (sha256) WHERE c.sha256 IS NULL"
)
# Two dedupes at once may hash the same photo: both find the same, so the second write is a no-op.
INSERT_CHECK = Query("INSERT OR IGNORE INTO curation (sha256, status, reason, phash, centre_hash) VALUES (?,?,?,?,?)")
HASHED_PHOTOS = Query(
    "SELECT c.sha256, c.phash, c.centre_hash, p.width * p.height AS pixels, p.stored_at "
    "FROM curation c JOIN photos p USING (sha256) WHERE c.status = 'ok' ORDER BY c.sha256"
)
PHOTO_PRODUCTS = Query("SELECT DISTINCT sha256, product_id FROM sources")
PHOTOS_OF_REVIEW_ID = Query("SELECT DISTINCT sha256 FROM sources WHERE review_id = ?")
SET_GROUP = Query("UPDATE curation SET group_id = ?, is_kept = ?, is_ambiguous = ? WHERE sha256 = ?")
GROUP_MEMBERS = Query(
    "SELECT c.sha256, c.group_id, c.is_kept, c.is_ambiguous, p.path, p.width, p.height, "
    "(SELECT group_concat(DISTINCT pr.name) FROM sources s JOIN products pr "
    " ON pr.shop = s.shop AND pr.product_id = s.product_id WHERE s.sha256 = c.sha256) AS products "
    "FROM curation c JOIN photos p USING (sha256) WHERE c.status = 'ok' ORDER BY c.group_id, c.is_kept DESC",
    "SELECT c.sha256, c.group_id, c.is_kept, c.is_ambiguous, p.path, p.width, p.height, "
    "(SELECT string_agg(DISTINCT pr.name, ',') FROM sources s JOIN products pr "
    " ON pr.shop = s.shop AND pr.product_id = s.product_id WHERE s.sha256 = c.sha256) AS products "
    "FROM curation c JOIN photos p USING (sha256) WHERE c.status = 'ok' ORDER BY c.group_id, c.is_kept DESC",
)
VERDICTS = Query(
    "SELECT e.*, p.path, l.decision, l.reason FROM estimates e JOIN photos p USING (sha256) "
    "LEFT JOIN labels l USING (sha256) ORDER BY e.confidence DESC"
)

# --- labeling: the rules project ---------------------------------------------------------------
USABLE_PHOTOS = Query("SELECT sha256, path FROM usable_photos")
PRODUCT_PHOTOS = Query("SELECT sha256, path FROM usable_photos WHERE shop = ? AND product_id = ? ORDER BY sha256")
# Usable photos without a task yet, newest review first.
UNLABELED_PHOTOS = Query(
    """
    SELECT u.sha256, u.path, u.photo_url, u.shop, pr.product_id, pr.name, pr.url
    FROM usable_photos u
    JOIN products pr ON pr.shop = u.shop AND pr.product_id = u.product_id
    LEFT JOIN labels l ON l.sha256 = u.sha256
    WHERE l.sha256 IS NULL
    ORDER BY u.review_created_at DESC, u.sha256
    """
)
# The product as the shop shows it, for the labeling view: its catalog photo, else the first
# review photo of it a person accepted.
PRODUCT_REFERENCE_PHOTO = Query(
    """
    SELECT u.sha256, u.path FROM usable_photos u JOIN labels l USING (sha256)
    WHERE u.shop = ? AND u.product_id = ? AND l.decision = 'accept'
    ORDER BY EXISTS (SELECT 1 FROM sources s WHERE s.sha256 = u.sha256 AND s.review_id = 'catalog') DESC,
        l.decided_at, u.sha256
    LIMIT 1
    """
)
PRODUCT_LOCATIONS = Query(
    "SELECT photos_digest, localiser, locations FROM product_locations WHERE shop = ? AND product_id = ?"
)
SAVE_PRODUCT_LOCATIONS = Query(
    "INSERT INTO product_locations VALUES (?,?,?,?,?) ON CONFLICT (shop, product_id) DO UPDATE SET "
    "photos_digest = excluded.photos_digest, localiser = excluded.localiser, locations = excluded.locations"
)
SAVE_BAD_ANSWER = Query(
    "INSERT INTO bad_answers VALUES (?,?,?,?,?,?) ON CONFLICT (sha256, annotator) DO UPDATE SET "
    "annotation_id = excluded.annotation_id, updated_at = excluded.updated_at, reason = excluded.reason, "
    "seen_at = excluded.seen_at"
)
FORGET_BAD_ANSWERS = Query("DELETE FROM bad_answers WHERE sha256 = ?")
SAVE_ESTIMATE = Query(
    "INSERT OR REPLACE INTO estimates (sha256, coverage, n_objects, confidence, coverage_verdict, "
    "objects_verdict, model_version, box) VALUES (?,?,?,?,?,?,?,?)",
    "INSERT INTO estimates (sha256, coverage, n_objects, confidence, coverage_verdict, "
    "objects_verdict, model_version, box) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sha256) DO UPDATE SET "
    "coverage = excluded.coverage, n_objects = excluded.n_objects, confidence = excluded.confidence, "
    "coverage_verdict = excluded.coverage_verdict, objects_verdict = excluded.objects_verdict, "
    "model_version = excluded.model_version, box = excluded.box",
)
# The labeling report (curation/labeling/report.py).
# The funnel from stored photos to the newest training, as partitions: each step's count is the
# sum of the counts it splits into (curation/labeling/report.py names them).
FUNNEL = Query(
    """
    SELECT
        (SELECT COUNT(*) FROM photos) AS crawled,
        (SELECT COUNT(*) FROM photos p LEFT JOIN curation c USING (sha256) WHERE c.sha256 IS NULL) AS unchecked,
        (SELECT COUNT(*) FROM curation WHERE status <> 'ok') AS invalid,
        (SELECT COUNT(*) FROM curation WHERE status = 'ok') AS valid,
        (SELECT COUNT(*) FROM curation WHERE status = 'ok' AND is_kept = 0) AS duplicates,
        (SELECT COUNT(*) FROM curation WHERE status = 'ok' AND is_kept = 1) AS unique_photos,
        (SELECT COUNT(*) FROM usable_photos) AS usable
    """
)
# The usable photos' labels, counted in one pass over them: sent to Label Studio (project 0 is
# an acceptance without a task: a catalog photo, an import), decided, and how.
LABEL_FUNNEL = Query(
    """
    SELECT
        COALESCE(SUM(CASE WHEN l.project_id <> 0 THEN 1 ELSE 0 END), 0) AS pushed,
        COALESCE(SUM(CASE WHEN l.project_id = 0 THEN 1 ELSE 0 END), 0) AS accepted_without_task,
        COALESCE(SUM(CASE WHEN l.project_id <> 0 AND l.decision IS NOT NULL THEN 1 ELSE 0 END), 0) AS labeled,
        COALESCE(SUM(CASE WHEN l.project_id <> 0 AND l.decision = 'accept' THEN 1 ELSE 0 END), 0)
            AS accepted_by_people,
        COALESCE(SUM(CASE WHEN l.project_id <> 0 AND l.decision = 'reject' THEN 1 ELSE 0 END), 0) AS rejected,
        COALESCE(SUM(CASE WHEN l.decision = 'accept' THEN 1 ELSE 0 END), 0) AS accepted
    FROM usable_photos u JOIN labels l USING (sha256)
    """
)
# The accepted photos the newest training holds, by split (whole photos: views are keyed apart).
TRAINED_BY_SPLIT = Query(
    """
    SELECT s.split, COUNT(*) AS n FROM usable_photos u JOIN labels l USING (sha256) JOIN splits s ON s.sha256 = u.sha256
    WHERE l.decision = 'accept' AND s.snapshot = (SELECT snapshot FROM splits ORDER BY rowid DESC LIMIT 1)
    GROUP BY s.split
    """
)
REJECTED_BY_REASON = Query(
    "SELECT l.reason, COUNT(*) AS n FROM usable_photos u JOIN labels l USING (sha256) "
    "WHERE l.project_id <> 0 AND l.decision = 'reject' GROUP BY l.reason ORDER BY n DESC, l.reason"
)
# The newest snapshot's splits: what the last training trained, validated and tested on, whole
# photos apart from the views cut to a person's box (their key holds the box after a '#').
SPLITS = Query(
    """
    SELECT split, CASE WHEN sha256 LIKE '%#%' THEN 'views' ELSE 'photos' END AS kind, COUNT(*) AS n FROM splits
    WHERE snapshot = (SELECT snapshot FROM splits ORDER BY rowid DESC LIMIT 1)
    GROUP BY split, kind
    """
)
DECIDED_WITH_ESTIMATES = Query(
    """
    SELECT l.decision, l.annotator, l.lead_time, e.coverage_verdict, e.objects_verdict
    FROM labels l LEFT JOIN estimates e USING (sha256)
    WHERE l.decision IS NOT NULL
    """
)
# What the machine estimated of one photo, with the photo's file: the ML backend's answer.
ESTIMATE_OF = Query("SELECT e.*, p.path FROM estimates e JOIN photos p USING (sha256) WHERE e.sha256 = ?")
PHOTO_FILE = Query("SELECT path FROM photos WHERE sha256 = ?")
# The rules project's tasks nobody has answered yet: the ones a new model predicts again.
OPEN_LABEL_TASKS = Query("SELECT task_id FROM labels WHERE project_id = ? AND annotation_id IS NULL ORDER BY task_id")
# A photo noted already keeps its row: pushing again never forgets a decision.
NOTE_LABEL_TASK = Query("INSERT OR IGNORE INTO labels (sha256, project_id, task_id, pushed_at) VALUES (?,?,?,?)")
LABEL_ANNOTATION = Query("SELECT annotation_id FROM labels WHERE sha256 = ?")
SAVE_DECISION = Query(
    "UPDATE labels SET annotation_id = ?, decision = ?, reason = ?, coverage = ?, n_objects = ?, decided_at = ?, "
    "box = ?, annotator = ?, lead_time = ? WHERE sha256 = ?"
)
# Overlap: each person's answer, and the review of photos decided differently.
ANSWER_SEEN = Query("SELECT annotation_id, updated_at FROM answers WHERE sha256 = ? AND annotator = ?")
SAVE_ANSWER = Query(
    "INSERT OR REPLACE INTO answers (sha256, annotator, annotation_id, updated_at, decision, reason, lead_time, "
    "result) VALUES (?,?,?,?,?,?,?,?)",
    "INSERT INTO answers (sha256, annotator, annotation_id, updated_at, decision, reason, lead_time, "
    "result) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sha256, annotator) DO UPDATE SET "
    "annotation_id = excluded.annotation_id, updated_at = excluded.updated_at, decision = excluded.decision, "
    "reason = excluded.reason, lead_time = excluded.lead_time, result = excluded.result",
)
# Photos whose annotators decided differently and that have no review task yet.
UNREVIEWED_DISPUTES = Query(
    """
    SELECT l.sha256, l.task_id FROM labels l LEFT JOIN reviews r USING (sha256)
    WHERE l.decision IS NULL AND r.sha256 IS NULL
        AND (SELECT COUNT(DISTINCT a.decision) FROM answers a WHERE a.sha256 = l.sha256) > 1
    ORDER BY l.task_id
    """
)
ANSWERS_OF = Query("SELECT * FROM answers WHERE sha256 = ? ORDER BY updated_at, annotation_id")
PULL_MARK = Query("SELECT updated_at FROM pull_marks WHERE project_id = ?")
SAVE_PULL_MARK = Query(
    "INSERT OR REPLACE INTO pull_marks (project_id, updated_at) VALUES (?, ?)",
    "INSERT INTO pull_marks (project_id, updated_at) VALUES (?, ?) "
    "ON CONFLICT (project_id) DO UPDATE SET updated_at = excluded.updated_at",
)
UNDECIDE = Query("UPDATE labels SET decision = NULL, reason = ?, decided_at = NULL WHERE sha256 = ?")
IS_REVIEWED = Query("SELECT annotation_id FROM reviews WHERE sha256 = ? AND annotation_id IS NOT NULL")
NOTE_REVIEW_TASK = Query("INSERT OR IGNORE INTO reviews (sha256, project_id, task_id, pushed_at) VALUES (?,?,?,?)")
REVIEW_ANNOTATION = Query("SELECT annotation_id FROM reviews WHERE sha256 = ?")
SAVE_REVIEW = Query("UPDATE reviews SET annotation_id = ?, decided_at = ? WHERE sha256 = ?")
COUNT_REVIEWS = Query("SELECT COUNT(*) FROM reviews")
# Every answer people gave to the rules, with the machine's verdict on its photo: each person's
# answer where they are kept, the reviewer's decision, and decisions made before answers were kept.
ANNOTATOR_WORK = Query(
    """
    SELECT a.annotator, a.decision, a.lead_time, e.coverage_verdict, e.objects_verdict
    FROM answers a LEFT JOIN estimates e USING (sha256)
    UNION ALL
    SELECT l.annotator, l.decision, l.lead_time, e.coverage_verdict, e.objects_verdict
    FROM labels l LEFT JOIN estimates e USING (sha256)
    WHERE l.decision IS NOT NULL AND (
        EXISTS (SELECT 1 FROM reviews r WHERE r.sha256 = l.sha256 AND r.annotation_id IS NOT NULL)
        OR NOT EXISTS (SELECT 1 FROM answers a WHERE a.sha256 = l.sha256))
    """
)
# Each person's answer beside the decision that counted, and how many people answered the photo.
ANSWERS_AND_FINAL = Query(
    """
    SELECT a.annotator, a.decision, l.decision AS final, r.sha256 IS NOT NULL AS reviewed,
        (SELECT COUNT(*) FROM answers b WHERE b.sha256 = a.sha256) AS people
    FROM answers a JOIN labels l USING (sha256) LEFT JOIN reviews r USING (sha256)
    WHERE l.decision IS NOT NULL
    """
)
OVERLAP = Query(
    """
    SELECT COUNT(*) AS answered_by_two, COALESCE(SUM(CASE WHEN kinds = 1 THEN 1 ELSE 0 END), 0) AS agreed,
        COALESCE(SUM(CASE WHEN kinds > 1 AND NOT reviewed THEN 1 ELSE 0 END), 0) AS in_review,
        COALESCE(SUM(CASE WHEN reviewed THEN 1 ELSE 0 END), 0) AS reviewed
    FROM (
        SELECT a.sha256, COUNT(DISTINCT a.decision) AS kinds,
            EXISTS (SELECT 1 FROM reviews r WHERE r.sha256 = a.sha256 AND r.annotation_id IS NOT NULL) AS reviewed
        FROM answers a GROUP BY a.sha256 HAVING COUNT(*) > 1
    ) AS pairs
    """
)
LABEL_TASKS_IN_PROJECT = Query("SELECT COUNT(*) FROM labels WHERE project_id = ?")
ACCEPTED_SINCE = Query("SELECT COUNT(*) FROM labels WHERE decision = 'accept' AND decided_at > ?")

# --- labeling: the "which product" project -----------------------------------------------------
# Kept photos of ambiguous groups that have no choice task yet.
UNCHOSEN_PHOTOS = Query(
    """
    SELECT c.sha256, c.group_id, p.path, s.photo_url
    FROM curation c JOIN photos p USING (sha256)
    JOIN sources s ON s.sha256 = c.sha256
        AND s.rowid = (SELECT MIN(rowid) FROM sources WHERE sha256 = c.sha256)
    LEFT JOIN product_choices pc ON pc.sha256 = c.sha256
    WHERE c.status = 'ok' AND c.is_kept = 1 AND c.is_ambiguous = 1 AND pc.sha256 IS NULL
    ORDER BY c.sha256
    """
)
# Every product a photo of the group was posted under.
GROUP_PRODUCTS = Query(
    """
    SELECT DISTINCT pr.product_id, pr.name FROM curation c
    JOIN sources s ON s.sha256 = c.sha256
    JOIN products pr ON pr.shop = s.shop AND pr.product_id = s.product_id
    WHERE c.group_id = ? ORDER BY pr.product_id
    """
)
NOTE_CHOICE_TASK = Query(
    "INSERT OR IGNORE INTO product_choices (sha256, project_id, task_id, pushed_at) VALUES (?,?,?,?)"
)
COUNT_PRODUCT_CHOICES = Query("SELECT COUNT(*) FROM product_choices")
CHOICE_ANNOTATION = Query("SELECT annotation_id FROM product_choices WHERE sha256 = ?")
SAVE_CHOICE = Query("UPDATE product_choices SET annotation_id = ?, product_id = ?, decided_at = ? WHERE sha256 = ?")

# --- the store's integrity (core/photos.py) ----------------------------------------------------
INTACT_PHOTOS = Query("SELECT sha256, bytes, mtime_ns FROM intact_photos")
PROVE_INTACT = Query(
    "INSERT OR REPLACE INTO intact_photos VALUES (?,?,?)",
    "INSERT INTO intact_photos VALUES (?,?,?) "
    "ON CONFLICT (sha256) DO UPDATE SET bytes = excluded.bytes, mtime_ns = excluded.mtime_ns",
)
FORGET_INTACT = Query("DELETE FROM intact_photos WHERE sha256 = ?")
# A damaged photo's reviews become failed fetches: the next crawl tries them first.
FAIL_SOURCES_OF = Query(
    "INSERT OR REPLACE INTO failures SELECT shop, review_id, photo_url, product_id, category_id, review_created_at, "
    "?, 1, ? FROM sources WHERE sha256 = ?",
    "INSERT INTO failures SELECT shop, review_id, photo_url, product_id, category_id, review_created_at, "
    "?, 1, ? FROM sources WHERE sha256 = ? ON CONFLICT (shop, review_id, photo_url) DO UPDATE SET "
    "product_id = excluded.product_id, category_id = excluded.category_id, "
    "review_created_at = excluded.review_created_at, reason = excluded.reason, attempts = excluded.attempts, "
    "last_try = excluded.last_try",
)
DELETE_SOURCES_OF = Query("DELETE FROM sources WHERE sha256 = ?")

# --- training ----------------------------------------------------------------------------------
# The photos that train: usable and accepted by the rules, with the product each shows.
ACCEPTED_PHOTOS = Query(
    """
    SELECT u.sha256, u.path, u.group_id, pr.product_id, pr.name, pr.url
    FROM labels l
    JOIN usable_photos u USING (sha256)
    JOIN products pr ON pr.shop = u.shop AND pr.product_id = u.product_id
    WHERE l.decision = 'accept'
    ORDER BY pr.product_id, u.sha256
    """
)
# Every photo's sources and duplicate group: photos of one review (or one import group), and
# those joined to them through a re-post, split together.
SPLIT_LINKS = Query(
    "SELECT s.sha256, s.shop, s.product_id, s.review_id, c.group_id FROM sources s LEFT JOIN curation c USING (sha256)"
)
# The perceptual hashes of photos, for the report's count of near duplicates across splits.
PHOTO_HASHES = Query("SELECT sha256, phash, centre_hash FROM curation WHERE phash IS NOT NULL")
# The photos search may find a product by: usable and not refused by a person, of any product
# (also products with too few photos to train on, and ones labeling has not reached yet).
INDEXABLE_PHOTOS = Query(
    """
    SELECT u.sha256, u.path, pr.product_id, pr.name, pr.url,
           EXISTS (SELECT 1 FROM sources s WHERE s.sha256 = u.sha256 AND s.review_id = 'catalog') AS catalog
    FROM usable_photos u
    JOIN products pr ON pr.shop = u.shop AND pr.product_id = u.product_id
    LEFT JOIN labels l USING (sha256)
    WHERE l.decision IS NULL OR l.decision = 'accept'
    ORDER BY pr.product_id, u.sha256
    """
)
# The photos a person boxed as showing exactly one product, accepted or refused only for its
# size in the frame: cut to the box, each shows its product alone.
BOXED_PHOTOS = Query(
    """
    SELECT u.sha256, u.path, u.group_id, l.box, p.width, p.height, pr.product_id, pr.name, pr.url
    FROM labels l
    JOIN usable_photos u USING (sha256)
    JOIN photos p USING (sha256)
    JOIN products pr ON pr.shop = u.shop AND pr.product_id = u.product_id
    WHERE l.box IS NOT NULL AND l.n_objects = 1
    ORDER BY pr.product_id, u.sha256
    """
)
# One row per example: a whole photo under its hash, a view cut to a box under its view's key.
RECORD_SPLIT = Query("INSERT OR IGNORE INTO splits VALUES (?,?,?)")
