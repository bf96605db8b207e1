"""What reaches a browser page as markup: escaping, bertviz's views served offline and safely."""
