"""Raw values as a table's text spells them: the words that mean a missing value.

The pipeline reads a raw CSV with them (src/tables.py), batch scoring reads a CSV to score with
them (batch/), and the service's page reads a pasted table with the same list
(api/page/static/app.js; a test holds the two equal).
"""

NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
