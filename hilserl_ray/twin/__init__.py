"""Digital twin of an SO-101: MuJoCo behind STS3215 ptys, MJPEG cameras and a scripted human."""
