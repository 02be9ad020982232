from resdepth.cli.app import main

main()
