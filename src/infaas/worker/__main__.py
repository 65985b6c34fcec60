from infaas.worker.server import main

main()
