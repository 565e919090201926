-- Questions with their accepted answer, written once in BigQuery's dialect.
-- Parameters: @tag_pattern (regex over the `a|b` tags), @answer_date_cutoff (YYYY-MM-DD), @limit.
SELECT
  q.id AS question_id,
  q.title AS title,
  q.body AS question_body,
  q.tags AS tags,
  q.creation_date AS question_date,
  a.id AS answer_id,
  a.body AS answer_body,
  a.creation_date AS answer_date,
  a.score AS answer_score
FROM `bigquery-public-data.stackoverflow.posts_questions` AS q
JOIN `bigquery-public-data.stackoverflow.posts_answers` AS a
  ON q.accepted_answer_id = a.id
WHERE q.accepted_answer_id IS NOT NULL
  AND REGEXP_CONTAINS(q.tags, @tag_pattern)
  AND a.creation_date >= TIMESTAMP(@answer_date_cutoff)
ORDER BY q.id
LIMIT @limit
