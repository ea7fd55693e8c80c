from tests.simulator.server import main

main()
