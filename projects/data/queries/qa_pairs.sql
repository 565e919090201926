-- Questions with their accepted answer, written once in BigQuery's dialect (DuckDB gets it via sqlglot).
-- Parameters: @tag_pattern (regex over the `a|b` tags; '.*' keeps untagged questions too),
-- @answer_date_cutoff (YYYY-MM-DD; answers created on or after it; NULL keeps every answer, undated ones too),
-- @limit,
-- @question_date_from / @question_date_to (YYYY-MM-DD, or NULL for no bound; questions created in [from, to)).
-- Ids are unique per Stack Exchange site, so joins are on (site, id); tables without a `site` column get the
-- configured default site (see docs/data.md).
-- Filtering, ordering and the limit run on narrow columns first; the bodies (most of the bytes) are joined
-- only to the selected pairs, so neither engine holds bodies of rows it then drops. Row order of the result
-- is unspecified: the data step orders examples by id itself.
WITH pairs AS (
  SELECT
    q.site AS site,
    q.id AS question_id,
    q.tags AS tags,
    q.creation_date AS question_date,
    a.id AS answer_id,
    a.creation_date AS answer_date,
    a.score AS answer_score
  FROM `bigquery-public-data.stackoverflow.posts_questions` AS q
  JOIN `bigquery-public-data.stackoverflow.posts_answers` AS a
    ON a.site = q.site AND a.id = q.accepted_answer_id
  WHERE q.accepted_answer_id IS NOT NULL
    AND REGEXP_CONTAINS(IFNULL(q.tags, ''), @tag_pattern)
    AND (@answer_date_cutoff IS NULL OR a.creation_date >= TIMESTAMP(@answer_date_cutoff))
    AND (@question_date_from IS NULL OR q.creation_date >= TIMESTAMP(@question_date_from))
    AND (@question_date_to IS NULL OR q.creation_date < TIMESTAMP(@question_date_to))
  ORDER BY site, question_id
  LIMIT @limit
)
SELECT
  p.site AS site,
  p.question_id AS question_id,
  qb.title AS title,
  qb.body AS question_body,
  p.tags AS tags,
  p.question_date AS question_date,
  p.answer_id AS answer_id,
  ab.body AS answer_body,
  p.answer_date AS answer_date,
  p.answer_score AS answer_score
FROM pairs AS p
JOIN `bigquery-public-data.stackoverflow.posts_questions` AS qb
  ON qb.site = p.site AND qb.id = p.question_id
JOIN `bigquery-public-data.stackoverflow.posts_answers` AS ab
  ON ab.site = p.site AND ab.id = p.answer_id
