-- How many questions survive each filter of qa_pairs.sql (same parameters): the validation report's funnel, and
-- the message when nothing survives. Reads only id, tag and date columns, so it scans a small fraction of the bytes
SELECT
  COUNT(*) AS questions,
  COUNTIF(q.accepted_answer_id IS NOT NULL) AS with_accepted_answer_id,
  COUNTIF(a.id IS NOT NULL) AS accepted_answer_present,
  COUNTIF(a.id IS NOT NULL AND REGEXP_CONTAINS(IFNULL(q.tags, ''), @tag_pattern)) AS tag_match,
  COUNTIF(a.id IS NOT NULL AND REGEXP_CONTAINS(IFNULL(q.tags, ''), @tag_pattern)
          AND a.creation_date IS NULL) AS answer_date_null,
  COUNTIF(a.id IS NOT NULL AND REGEXP_CONTAINS(IFNULL(q.tags, ''), @tag_pattern)
          AND (@answer_date_cutoff IS NULL OR a.creation_date >= TIMESTAMP(@answer_date_cutoff))) AS answer_date_match,
  COUNTIF(a.id IS NOT NULL AND REGEXP_CONTAINS(IFNULL(q.tags, ''), @tag_pattern)
          AND (@answer_date_cutoff IS NULL OR a.creation_date >= TIMESTAMP(@answer_date_cutoff))
          AND (@question_date_from IS NULL OR q.creation_date >= TIMESTAMP(@question_date_from))
          AND (@question_date_to IS NULL OR q.creation_date < TIMESTAMP(@question_date_to))) AS question_window_match
FROM `bigquery-public-data.stackoverflow.posts_questions` AS q
LEFT JOIN `bigquery-public-data.stackoverflow.posts_answers` AS a
  ON a.site = q.site AND a.id = q.accepted_answer_id
