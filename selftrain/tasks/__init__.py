"""Built-in and external task sources: seeded arithmetic and a GSM8K reader."""
