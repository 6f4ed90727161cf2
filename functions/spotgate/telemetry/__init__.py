"""What an operator watches: request and fleet metrics, and one access line per request."""
