"""Live event sources (Binance WebSocket, tardis-machine, lake replay, the simulator's feed) and their names."""
