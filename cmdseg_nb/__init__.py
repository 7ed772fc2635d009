"""cmdseg_nb: Segment exports -> Command AI user properties, and lossless bulk sends to Segment."""
