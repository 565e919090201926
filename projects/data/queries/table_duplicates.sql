-- Rows of each table whose (site, id) occurs more than once (the same dump imported twice, overlapping exports).
-- Run only when the query result repeats a question id: each is a full GROUP BY over a table's ids (10M rows:
-- seconds), which the data step does not pay when there is nothing to explain.
SELECT
  (SELECT IFNULL(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM `bigquery-public-data.stackoverflow.posts_questions` AS d
                                     GROUP BY d.site, d.id HAVING COUNT(*) > 1)) AS posts_questions,
  (SELECT IFNULL(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM `bigquery-public-data.stackoverflow.posts_answers` AS d
                                     GROUP BY d.site, d.id HAVING COUNT(*) > 1)) AS posts_answers
