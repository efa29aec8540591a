"""MovieLens data: fetching the sets and importing them into the ratings database."""
