"""originshield: an async origin shield for product images."""
