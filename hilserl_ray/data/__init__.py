"""LeRobot v2.1/v3.0 datasets: reader, writer, conversion to offline transitions, cache."""
