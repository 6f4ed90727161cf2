"""What serving cost: GPU prices by date, GPU time apportioned to requests, and the margin report.

Revenue is fixed when a usage record is written; cost is only known once the
GPU time of a whole hour can be shared out, so it is worked out here, when a
report is asked for, from the usage records and the fleet's worker spans.
"""
